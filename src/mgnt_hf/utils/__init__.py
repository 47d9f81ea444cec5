"""Small shared rules: argument checks (`checks`)."""

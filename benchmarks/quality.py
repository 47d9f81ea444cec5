"""Sample quality against compute for each width schedule: `mgnt evaluate` as a script.

    python benchmarks/quality.py PIPELINE --samples-per-class 100 --output-dir quality

Same options as `mgnt evaluate --help`; the work is done by `mgnt_hf.evaluation` (importable, see
`mgnt_hf.evaluation.image`). Writes results.md, results.json, quality_vs_gflops.png and samples/<row>.png to
--output-dir.
"""

import sys

from mgnt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))

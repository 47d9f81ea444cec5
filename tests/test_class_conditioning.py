"""The class-label probe (mgnt_hf.evaluation.class_label_probe) and its script
(training/ablations/class_conditioning.py)."""

import json

import pytest
import torch
from conftest import make_tiny_transformer, make_tiny_video_transformer, make_tiny_video_vqvae
from test_ablation import SCRIPT, load_script

from mgnt_hf import MGNTScheduler, MGNTVideoPipeline
from mgnt_hf.evaluation import class_label_probe, format_probe_table
from mgnt_hf.evaluation.conditioning import _masked_positions


def real_tokens(num_examples=12, num_tokens=16, codebook_size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, codebook_size, (num_examples, num_tokens), generator=generator),
            torch.arange(num_examples) % 3)


def test_a_model_whose_labels_all_embed_alike_carries_no_label_information():
    transformer = make_tiny_transformer()
    with torch.no_grad():  # every label, the null class included, gets the same embedding
        embeddings = transformer.embeddings.class_embeddings.weight
        embeddings.copy_(embeddings[0].expand_as(embeddings))
    tokens, labels = real_tokens()
    for row in class_label_probe(transformer, tokens, labels, mask_ratios=(1.0, 0.5), batch_size=5):
        assert row["cross_entropy_true"] == row["cross_entropy_wrong"] == row["cross_entropy_null"]
        assert row["label_information_nats"] == 0.0
        assert row["label_identification"] == 0.0  # ties identify nothing


def test_the_true_label_cross_entropy_is_the_models_own_masked_loss():
    transformer = make_tiny_transformer()
    tokens, labels = real_tokens()
    rows = class_label_probe(transformer, tokens, labels, mask_ratios=(0.5,), widths=(16, 64), batch_size=5, seed=3)
    mask = _masked_positions(len(tokens), tokens.shape[1], 8, torch.Generator().manual_seed(3))
    assert [(row["width"], row["num_masked"], row["num_examples"]) for row in rows] == [(16, 8, 12), (64, 8, 12)]
    for row in rows:
        with torch.no_grad():
            loss = transformer(tokens.masked_fill(mask, 16), labels, width=row["width"],
                               labels=tokens.masked_fill(~mask, -100)).loss
        assert row["cross_entropy_true"] == pytest.approx(float(loss), rel=1e-5)


def test_masks_hold_exactly_the_ratio_of_positions_and_at_least_one():
    mask = _masked_positions(7, 16, 5, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [5] * 7
    transformer = make_tiny_transformer()
    tokens, labels = real_tokens()
    (row,) = class_label_probe(transformer, tokens, labels, mask_ratios=(0.01,), widths=(8,))
    assert row["num_masked"] == 1


def test_a_model_trained_on_label_determined_tokens_identifies_the_label():
    transformer = make_tiny_transformer().train()
    tokens = (torch.arange(30) % 3).unsqueeze(1).expand(30, 16).contiguous()  # every token is the label's id
    labels = torch.arange(30) % 3
    optimizer = torch.optim.Adam(transformer.parameters(), lr=1e-2)
    for _ in range(40):
        loss = transformer(torch.full_like(tokens, 16), labels, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (row,) = class_label_probe(transformer, tokens, labels, mask_ratios=(1.0,), widths=(64,))
    assert transformer.training  # the probe restores the mode it found
    assert row["label_identification"] == 1.0
    assert row["cross_entropy_true"] < row["cross_entropy_null"] < row["cross_entropy_wrong"]
    assert row["label_information_nats"] > 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"mask_ratios": (0.0,)}, "mask ratios"),
    ({"mask_ratios": (1.5,)}, "mask ratios"),
    ({"mask_ratios": (True,)}, "mask ratios"),
    ({"mask_ratios": ()}, "at least one"),
    ({"widths": (12,)}, "width"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_settings_are_refused(kwargs, message):
    tokens, labels = real_tokens()
    with pytest.raises(ValueError, match=message):
        class_label_probe(make_tiny_transformer(), tokens, labels, **kwargs)


def test_bad_tokens_and_labels_are_refused():
    transformer = make_tiny_transformer()
    tokens, labels = real_tokens()
    with pytest.raises(ValueError, match="no mask tokens"):
        class_label_probe(transformer, tokens.masked_fill(tokens == 0, 16), labels)
    with pytest.raises(ValueError, match="grid has 16"):
        class_label_probe(transformer, tokens[:, :8], labels)
    with pytest.raises(ValueError, match="null class"):
        class_label_probe(transformer, tokens, torch.full_like(labels, 3))
    with pytest.raises(ValueError, match=r"class_labels must be \[12\]"):
        class_label_probe(transformer, tokens, labels[:5])


def test_the_table_has_a_line_per_ratio_and_width():
    tokens, labels = real_tokens()
    rows = class_label_probe(make_tiny_transformer(), tokens, labels, mask_ratios=(1.0, 0.5), widths=(8, 64))
    table = format_probe_table(rows)
    assert table.count("\n") == 1 + 4
    assert f"| 0.5 | 64 | 8 | {rows[3]['cross_entropy_true']:.4f} |" in table


def test_the_script_probes_a_saved_video_pipeline_on_its_dataset(tmp_path):
    from evaluation_helpers import save_moving_squares_dataset

    script = load_script(SCRIPT.with_name("class_conditioning.py"))
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(), MGNTScheduler())
    pipe.save_pretrained(tmp_path / "pipe")
    dataset = save_moving_squares_dataset(tmp_path / "squares")
    docs = tmp_path / "docs"
    script.main(["--pipeline", str(tmp_path / "pipe"), "--dataset", str(dataset), "--num-examples", "4",
                 "--mask-ratios", "1.0", "--widths", "8", "64", "--docs_dir", str(docs), "--name", "probe"])
    results = json.loads((docs / "probe.json").read_text())
    (probe,) = results["probes"]
    assert probe["num_examples"] == 4 and [row["width"] for row in probe["results"]] == [8, 64]
    assert probe["results"][0]["num_masked"] == 32  # the 2x4x4 grid, all masked
    text = (docs / "probe.md").read_text()
    assert "chance identification 33.3%" in text and "| 1 | 64 | 32 |" in text

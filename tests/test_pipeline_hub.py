"""MGNTPipeline on a Hub, for real: `push_to_hub`, then `from_pretrained(repo_id)` in a fresh process.

The real `huggingface_hub` / `diffusers` client code runs unpatched in subprocesses whose
`HF_ENDPOINT` points at `FakeHub` (tests/fake_hub.py); every subprocess starts with an empty
`HF_HOME`, so what it loads came over HTTP from the pushed repo. One server serves the whole
module; each test uses its own repo.

Not covered: LFS and Xet transfer (the server has every file travel inside the commit body and
serves plain GETs) and authentication (any bearer token is accepted).
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import make_tiny_transformer, make_tiny_vqvae
from fake_hub import FakeHub, fake_hub_module_server, run_client  # noqa: F401  (fixture import)

from mgnt_hf import MGNTPipeline, MGNTScheduler

LABELS = [0, 1, 2]
PICKLE_OR_CODE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".py")


def tiny_pipeline_with_seed(seed: int) -> MGNTPipeline:
    """conftest's tiny components; `seed` picks the transformer weights (the tokenizer is always seed 0)."""
    pipe = MGNTPipeline(make_tiny_transformer(seed=seed), make_tiny_vqvae(seed=0), MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images_of(pipe: MGNTPipeline) -> np.ndarray:
    """`[3, H, W, C]` images in [0, 1] for LABELS with seed 0: the recipe `pull_images` repeats."""
    return pipe(LABELS, generator=torch.Generator().manual_seed(0), output_type="np").images


def push_saved_folders(hub: FakeHub, tmp_path: Path, repo_id: str, folders: list[Path]) -> list[str]:
    """In one fresh process, load each saved pipeline folder and `push_to_hub` it; return the commit shas."""
    run_client(f"""
        from mgnt_hf import MGNTPipeline
        for folder in {[str(f) for f in folders]!r}:
            MGNTPipeline.from_pretrained(folder).push_to_hub({repo_id!r})
    """, hub, tmp_path)
    history = hub.commits(repo_id)
    return [commit["sha"] for commit in history[: len(folders)]][::-1]


def pull_images(hub: FakeHub, tmp_path: Path, repo_id: str, revisions: list[str | None]) -> list[np.ndarray]:
    """In one fresh process with an empty cache: `from_pretrained(repo_id, revision=r)` for each r; its images."""
    outputs = [tmp_path / f"pulled_{i}.npy" for i in range(len(revisions))]
    run_client(f"""
        import numpy as np
        import torch
        from mgnt_hf import MGNTPipeline
        for revision, out in zip({revisions!r}, {[str(o) for o in outputs]!r}):
            pipe = MGNTPipeline.from_pretrained({repo_id!r}, revision=revision)
            pipe.set_progress_bar_config(disable=True)
            images = pipe({LABELS!r}, generator=torch.Generator().manual_seed(0), output_type="np").images
            np.save(out, images)
    """, hub, tmp_path)
    return [np.load(out) for out in outputs]


def front_matter(card: str) -> dict:
    match = re.match(r"\A---\n(.*?)\n---\n", card, re.DOTALL)
    assert match is not None, f"README.md has no YAML front matter:\n{card[:300]}"
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module")
def pushed(fake_hub_module_server, tmp_path_factory):
    """A tiny pipeline saved to `local` and pushed (from a fresh process) to `repo_id`."""
    work = tmp_path_factory.mktemp("pushed")
    pipe = tiny_pipeline_with_seed(0)
    pipe.save_pretrained(work / "local")
    push_saved_folders(fake_hub_module_server, work, "user/tiny-mgnt-pipeline", [work / "local"])
    return SimpleNamespace(hub=fake_hub_module_server, pipe=pipe, local=work / "local",
                           repo_id="user/tiny-mgnt-pipeline")


def test_pushed_repo_holds_the_saved_files_and_nothing_pickled(pushed):
    saved = sorted(p.relative_to(pushed.local).as_posix() for p in pushed.local.rglob("*") if p.is_file())
    uploaded = pushed.hub.list_files(pushed.repo_id)

    assert uploaded == sorted([".gitattributes", "README.md", *saved])
    assert {"model_index.json", "transformer/config.json", "transformer/model.safetensors", "vqvae/config.json",
            "vqvae/model.safetensors", "scheduler/scheduler_config.json"} <= set(uploaded)
    assert not [name for name in uploaded if name.endswith(PICKLE_OR_CODE_SUFFIXES)]
    for name in saved:
        remote, local = pushed.hub.read_file(pushed.repo_id, name), (pushed.local / name).read_bytes()
        if name == "model_index.json":
            # The pushing process re-saved what it loaded: only the recorded load path differs.
            remote, local = (
                {k: v for k, v in json.loads(text).items() if k != "_name_or_path"} for text in (remote, local)
            )
        assert remote == local, name


def test_pushed_card_front_matter_names_mgnt_hf(pushed):
    card = pushed.hub.read_file(pushed.repo_id, "README.md").decode()
    metadata = front_matter(card)

    assert metadata["library_name"] == "mgnt_hf"
    assert metadata["license"] == "mit"
    assert {"mgnt_hf", "magnets", "maskgit"} <= set(metadata["tags"])
    assert f'MGNTPipeline.from_pretrained("{pushed.repo_id}")' in card


def test_pipeline_loaded_by_repo_id_in_a_fresh_process_gives_identical_images(pushed, tmp_path):
    requests_before = len(pushed.hub.requests)

    [pulled] = pull_images(pushed.hub, tmp_path, pushed.repo_id, [None])

    expected = images_of(pushed.pipe)
    assert pulled.shape == expected.shape == (3, 16, 16, 3)
    assert np.array_equal(pulled, expected)
    downloads = [r for r in pushed.hub.requests[requests_before:] if r.startswith("GET /user/")]
    assert any(r.endswith("/transformer/model.safetensors") for r in downloads), downloads
    assert pushed.hub.unhandled == []


def test_loading_a_pinned_revision_gives_that_revisions_images(fake_hub_module_server, tmp_path):
    hub, repo_id = fake_hub_module_server, "user/tiny-mgnt-revisions"
    first, second = tiny_pipeline_with_seed(0), tiny_pipeline_with_seed(1)
    first.save_pretrained(tmp_path / "first")
    second.save_pretrained(tmp_path / "second")
    expected_first, expected_second = images_of(first), images_of(second)
    assert not np.array_equal(expected_first, expected_second)  # else this test could not tell them apart

    first_sha, second_sha = push_saved_folders(hub, tmp_path, repo_id, [tmp_path / "first", tmp_path / "second"])
    pulled_first, pulled_main = pull_images(hub, tmp_path, repo_id, [first_sha, None])

    assert first_sha != second_sha and hub.commits(repo_id)[0]["sha"] == second_sha
    assert np.array_equal(pulled_first, expected_first)
    assert np.array_equal(pulled_main, expected_second)


def test_download_fetches_no_pickles_or_code_from_the_repo(fake_hub_module_server, tmp_path):
    hub, repo_id = fake_hub_module_server, "user/tiny-mgnt-with-strays"
    local = tmp_path / "local"
    tiny_pipeline_with_seed(0).save_pretrained(local)
    (local / "transformer" / "pytorch_model.bin").write_bytes(b"stands in for a pickle: must not be fetched")
    (local / "pipeline_custom.py").write_text("raise SystemExit('custom code must not be fetched')\n")
    listing = tmp_path / "listing.json"
    requests_before = len(hub.requests)
    run_client(f"""
        import json, os
        from huggingface_hub import HfApi
        from mgnt_hf import MGNTPipeline
        HfApi().create_repo({repo_id!r})
        HfApi().upload_folder(repo_id={repo_id!r}, folder_path={str(local)!r})
        folder = MGNTPipeline.download({repo_id!r})
        names = [os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs]
        json.dump(sorted(names), open({str(listing)!r}, "w"))
    """, hub, tmp_path)

    assert {"transformer/pytorch_model.bin", "pipeline_custom.py"} <= set(hub.list_files(repo_id))
    downloaded = json.loads(listing.read_text())
    assert {"model_index.json", "transformer/model.safetensors", "vqvae/model.safetensors"} <= set(downloaded)
    assert not [name for name in downloaded if name.endswith(PICKLE_OR_CODE_SUFFIXES)]
    fetched = [r for r in hub.requests[requests_before:] if r.startswith(("GET", "HEAD")) and "/resolve/" in r]
    assert not [r for r in fetched if r.endswith((".bin", ".py"))], fetched

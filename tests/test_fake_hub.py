"""Push to and pull from a Hub for real, against the local `FakeHub` server (tests/fake_hub.py).

The real `huggingface_hub` / `transformers` client code runs unpatched in a subprocess whose
`HF_ENDPOINT` points at the server; each subprocess starts with an empty `HF_HOME`, so every
download comes over HTTP.

Not covered: LFS and Xet transfer (the server answers `uploadMode: "regular"` for every file,
so files travel inside the commit body and downloads are plain GETs), and authentication (any
bearer token is accepted). Behaviour that depends on those can only be checked on the real Hub.
"""

import json
import re

import torch
from fake_hub import fake_hub_server, git_blob_sha1, run_client  # noqa: F401  (fixture import)
from huggingface_hub.utils import sha as hf_sha
from safetensors.torch import load_file

TINY_CONFIG = dict(
    codebook_size=16,
    num_classes=3,
    token_grid=(4, 4),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    nested_widths=(8, 16, 32),
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _write_source_folder(root):
    """A folder with text, binary, a nested file and a model card; returns {relative path: bytes}."""
    files = {
        "README.md": b"---\nlicense: mit\ntags:\n- test\n---\n# A test repo\n",
        "config.json": json.dumps({"a": 1}).encode(),
        "weights/blob.bin": bytes(range(256)) * 40 + b"\x00\xff",
        "notes.txt": "caf\u00e9\n".encode(),
    }
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_server_oid_is_the_clients_git_blob_hash():
    # preupload's `oid` must equal the client's own hash, or unchanged files would be re-committed.
    for content in (b"", b"hello", bytes(range(256)) * 100):
        assert git_blob_sha1(content) == hf_sha.git_hash(content)


def test_upload_folder_then_download_returns_identical_bytes(fake_hub_server, tmp_path):
    source = _write_source_folder(tmp_path / "source")
    code = f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        api = HfApi()
        api.create_repo("user/round-trip")
        api.upload_folder(repo_id="user/round-trip", folder_path={str(tmp_path / "source")!r})
        single = {{p: hf_hub_download("user/round-trip", p) for p in {sorted(source)!r}}}
        snapshot = snapshot_download("user/round-trip")
        print(json.dumps({{"single": single, "snapshot": snapshot}}))
    """
    paths = json.loads(run_client(code, fake_hub_server, tmp_path).stdout.strip().splitlines()[-1])

    for relative, content in source.items():
        assert fake_hub_server.read_file("user/round-trip", relative) == content
        with open(paths["single"][relative], "rb") as f:
            assert f.read() == content
        with open(f"{paths['snapshot']}/{relative}", "rb") as f:
            assert f.read() == content
    assert fake_hub_server.list_files("user/round-trip") == sorted([".gitattributes", *source])
    assert fake_hub_server.unhandled == []
    assert not [r for r in fake_hub_server.requests if "lfs" in r or "xet" in r]


def test_each_commit_gets_a_new_sha_and_main_points_at_the_latest(fake_hub_server, tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "data.txt").write_bytes(b"version 1")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "data.txt").write_bytes(b"version 2")
    code = f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        api.create_repo("user/history")
        first = api.upload_folder(repo_id="user/history", folder_path={str(tmp_path / "v1")!r}).oid
        unchanged = api.upload_folder(repo_id="user/history", folder_path={str(tmp_path / "v1")!r}).oid
        second = api.upload_folder(repo_id="user/history", folder_path={str(tmp_path / "v2")!r}).oid
        old = open(hf_hub_download("user/history", "data.txt", revision=first), "rb").read().decode()
        new = open(hf_hub_download("user/history", "data.txt"), "rb").read().decode()
        main_sha = api.model_info("user/history").sha
        print(json.dumps(dict(first=first, unchanged=unchanged, second=second, old=old, new=new, main=main_sha)))
    """
    out = json.loads(run_client(code, fake_hub_server, tmp_path).stdout.strip().splitlines()[-1])

    history = fake_hub_server.commits("user/history")
    # initial commit (.gitattributes), v1, v2: the unchanged re-upload made no commit.
    assert [c["sha"] for c in history[:2]] == [out["second"], out["first"]]
    assert len(history) == 3 and history[-1]["parent"] is None
    assert out["unchanged"] == out["first"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", c["sha"]) for c in history)
    assert len({c["sha"] for c in history}) == 3
    assert out["main"] == out["second"]
    assert (out["old"], out["new"]) == ("version 1", "version 2")


def test_hub_errors_reach_the_client_as_huggingface_hub_exceptions(fake_hub_server, tmp_path):
    code = """
        import pytest
        from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
        )
        api = HfApi()
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("user/missing")
        api.create_repo("user/errors")
        with pytest.raises(HfHubHTTPError) as info:
            api.create_repo("user/errors")
        assert info.value.response.status_code == 409
        api.create_repo("user/errors", exist_ok=True)
        with pytest.raises(EntryNotFoundError):
            hf_hub_download("user/errors", "absent.txt")
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download("user/errors", ".gitattributes", revision="no-such-branch")
        with pytest.raises(ValueError, match="Invalid metadata in README.md"):
            api.upload_file(repo_id="user/errors", path_in_repo="README.md",
                            path_or_fileobj=b"---\\nlicense: [unclosed\\n---\\n")
        with pytest.raises(HfHubHTTPError) as info:
            api.upload_file(repo_id="user/errors", path_in_repo="x.txt", path_or_fileobj=b"x", create_pr=True)
        assert info.value.response.status_code == 501
    """
    run_client(code, fake_hub_server, tmp_path)
    assert fake_hub_server.list_files("user/errors") == [".gitattributes"]
    assert fake_hub_server.unhandled == ["POST /api/models/user/errors/preupload/main"]


def test_pushed_mgnt_transformer_loads_by_repo_id_with_identical_logits(fake_hub_server, tmp_path):
    inputs_and_logits = tmp_path / "reference.safetensors"
    push = f"""
        import torch
        from safetensors.torch import save_file
        from mgnt_hf import MGNTConfig, MGNTTransformer
        torch.manual_seed(0)
        model = MGNTTransformer(MGNTConfig(**{TINY_CONFIG!r})).eval()
        model.push_to_hub("user/tiny-mgnt")
        config = model.config
        # Ids up to mask_token_id (= codebook_size) so the mask embedding is exercised too.
        input_ids = torch.randint(0, config.mask_token_id + 1, (3, config.num_grid_tokens))
        class_labels = torch.tensor([0, config.num_classes - 1, config.null_class_id])
        tensors = {{"input_ids": input_ids, "class_labels": class_labels}}
        with torch.no_grad():
            for width in config.nested_widths:
                tensors[f"logits_{{width}}"] = model(input_ids, class_labels, width=width).logits
        save_file(tensors, {str(inputs_and_logits)!r})
    """
    run_client(push, fake_hub_server, tmp_path)
    requests_after_push = len(fake_hub_server.requests)

    reloaded_logits = tmp_path / "reloaded.safetensors"
    pull = f"""
        import torch
        from mgnt_hf import MGNTTransformer  # importing an mgnt_hf name registers the Auto classes
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained("user/tiny-mgnt")
        assert type(model) is MGNTTransformer, type(model)
        reference = load_file({str(inputs_and_logits)!r})
        with torch.no_grad():
            logits = {{
                f"logits_{{w}}": model(reference["input_ids"], reference["class_labels"], width=w).logits
                for w in model.config.nested_widths
            }}
        save_file(logits, {str(reloaded_logits)!r})
    """
    run_client(pull, fake_hub_server, tmp_path)

    files = fake_hub_server.list_files("user/tiny-mgnt")
    assert files == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    assert "GET /user/tiny-mgnt/resolve/" in " ".join(fake_hub_server.requests[requests_after_push:])
    assert fake_hub_server.unhandled == []
    reference, reloaded = load_file(inputs_and_logits), load_file(reloaded_logits)
    assert set(reloaded) == {f"logits_{w}" for w in TINY_CONFIG["nested_widths"]}
    for name, logits in reloaded.items():
        assert logits.shape == (3, 16, 16)
        assert torch.equal(logits, reference[name]), name

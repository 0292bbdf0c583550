"""Publish a run to the Hugging Face Hub: the adapter and a model card, optionally the merged model and GGUF files.

    dispatchtune publish --run RUN --repo OWNER/NAME [--private] [--include merged,gguf] [--dry-run]

The repo gets the adapter at its root (so `PeftModel.from_pretrained(repo)` works; a full fine-tune's RUN/adapter
holds the whole model, so `AutoModelForCausalLM.from_pretrained(repo)` then), README.md (export/card.py), and with
--include the verified RUN/merged in `merged/` and RUN/gguf (files, Modelfiles, verify.json) in `gguf/`, all in one
commit through huggingface_hub (`create_repo`, then `create_commit`; large files go by LFS/Xet as the client
decides). The card is also written to RUN/publish/README.md; --dry-run stops there and lists the files.

The token comes from HF_TOKEN or `hf auth login`, and only huggingface_hub sees it: it is never printed, and the
card is built from RUN's files alone. HF_ENDPOINT points the client at another Hub (a mirror, or a test server).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dispatchtune.errors import UserError
from dispatchtune.runinfo import is_full_model

from . import verified_report
from .card import model_card

EXTRAS = ("merged", "gguf")  # what --include can add, each a verified stage output in RUN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True,
                        help="run directory (RUN/adapter is published: the adapter, or a full fine-tune's model)")
    parser.add_argument("--repo", required=True, help="Hub repo id, OWNER/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--include", default="", help=f"also upload, comma-separated: {', '.join(EXTRAS)}")
    parser.add_argument("--dataset", action="append", default=[],
                        help="Hub dataset id trained on, for the card's metadata (repeatable)")
    parser.add_argument("--license", help="license id for the card (default: other, pointing at the base model's)")
    parser.add_argument("--dry-run", action="store_true", help="write the card and list the files; upload nothing")


def run(args: argparse.Namespace) -> int:
    include = [x.strip() for x in args.include.split(",") if x.strip()]
    files = publish(args.run, args.repo, include=include, private=args.private, dry_run=args.dry_run,
                    datasets=args.dataset, license=args.license)
    total = sum(local.stat().st_size for _, local in files)
    if args.dry_run:
        print(f"publish (dry run): would upload {len(files)} files ({total / 2**20:.1f} MB) to {args.repo}:")
        for path, local in files:
            print(f"  {path}  ({local.stat().st_size / 2**20:.2f} MB)")
        print(f"card: {args.run / 'publish' / 'README.md'}")
    return 0


def publish(run_dir: Path, repo_id: str, *, include: list[str], private: bool = False, dry_run: bool = False,
            datasets: list[str] = (), license: str | None = None) -> list[tuple[str, Path]]:
    """Write the card, then (unless `dry_run`) upload; return the (path in repo, local file) pairs."""
    unknown = [x for x in include if x not in EXTRAS]
    if unknown:
        raise UserError(f"--include takes {', '.join(EXTRAS)}, not {', '.join(unknown)}")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo must be OWNER/NAME, not {repo_id!r}")
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file() and not is_full_model(adapter):
        raise UserError(f"{adapter} holds no adapter (nor a fully fine-tuned model); train the run first "
                        "(dispatchtune train)")
    token = None
    if not dry_run:
        from huggingface_hub import get_token

        token = get_token()
        if not token:
            raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")

    # PEFT's save_pretrained leaves a stub README.md in the adapter: the card replaces it. (A full fine-tune's model
    # goes to the root the same way: its weights, config, generation config and tokenizer.)
    files = [(p.name, p) for p in sorted(adapter.iterdir()) if p.is_file() and p.name != "README.md"]
    for extra in include:
        files += [(f"{extra}/{p.name}", p) for p in sorted(_verified(run_dir / extra).iterdir()) if p.is_file()]
    card = run_dir / "publish" / "README.md"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(model_card(run_dir, repo_id, include=include, datasets=list(datasets), license=license),
                    encoding="utf-8")
    files.append(("README.md", card))
    if dry_run:
        return files

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        print(f"publish: uploading {len(files)} files to {url}")
        commit = api.create_commit(
            repo_id, operations=[CommitOperationAdd(path_in_repo=path, path_or_fileobj=local) for path, local in files],
            commit_message=f"dispatchtune: publish run {run_dir.resolve().name}",
        )
    except HfHubHTTPError as e:
        raise UserError(_refusal(e, repo_id)) from None
    except Exception as e:  # noqa: BLE001 - re-raised unless the network failed
        # the client's transport errors (httpx's or httpx2's TransportError, as the hub version has it)
        if not isinstance(e, OSError) and not any(c.__name__ == "TransportError" for c in type(e).__mro__):
            raise
        raise UserError(f"cannot reach the Hub at {api.endpoint} ({e}); check the connection (or HF_ENDPOINT) "
                        "and run again") from None
    print(f"publish: {commit.commit_url}")
    return files


def _refusal(e, repo_id: str) -> str:
    """What the Hub's refusal means for the user, in one line (the client's message names no token)."""
    status = e.response.status_code if e.response is not None else None
    said = (getattr(e, "server_message", None) or str(e)).strip().splitlines()[0]
    if status == 401:
        return ("the Hub refused the token (401 Unauthorized: expired, revoked or mistyped); log in again with "
                "`hf auth login` or set HF_TOKEN")
    if status == 403:
        return f"the token may not write to {repo_id} (403 Forbidden: {said}); use a token with write access there"
    return f"the Hub refused publishing to {repo_id} ({status or 'no response'}: {said}); nothing was committed"


def _verified(stage_dir: Path) -> Path:
    """A stage output whose verify.json says it passed; anything else is not published."""
    if verified_report(stage_dir) is None:
        command = "merge" if stage_dir.name == "merged" else "export gguf"
        raise UserError(f"{stage_dir} is not a verified output; run `dispatchtune {command} --run {stage_dir.parent}`")
    return stage_dir

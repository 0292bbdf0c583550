"""`dispatchtune`: one command, a subcommand per stage. A user's mistake (UserError) is one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from .errors import UserError

# subcommand -> (module with add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "synth": ("dispatchtune.data_prep.synthetic", "write the demo's seeded dispatch data: train and held-out samples"),
    "prep": ("dispatchtune.data_prep.prep", "convert tool-call datasets into validated, split canonical samples"),
    "tiny": ("dispatchtune.tiny_models", "build tiny random models of each family for tests and the demo"),
    "eval": ("dispatchtune.eval.cli", "build eval cases, run models on them, score, compare and gate"),
    "train": ("dispatchtune.train.sft", "LoRA SFT with TRL on prepared samples, loss on the assistant's tokens only"),
    "inspect": ("dispatchtune.train.inspect", "show samples as the trainer sees them, trained tokens marked"),
    "merge": ("dispatchtune.export.merge", "merge a LoRA adapter into its base model, verified against base+adapter"),
    "export": ("dispatchtune.export.gguf", "convert a merged model to verified GGUF files (llama.cpp, Ollama Modelfile)"),
    "publish": ("dispatchtune.export.publish", "upload the adapter, a model card and optionally merged/GGUF files to the Hub"),
    "run": ("dispatchtune.pipeline", "prep, train, eval, gate, merge and GGUF from one recipe, resuming a stopped run"),
    "recipes": ("dispatchtune.train.catalog", "list the shipped recipes, each usable by name: --recipe NAME"),
}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (the fix is in --help), exit code 2, like UserError."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dispatchtune",
        description="Fine-tune small open models into tool-calling dispatch models: prep -> train -> eval -> export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def quiet_libraries() -> None:
    """Silence what libraries say to each other rather than to the user, each by its exact message, so their
    warnings about the user's run still show."""
    # bitsandbytes, imported by PEFT, looks for an optional CPU kernel for 4-bit layers; only QLoRA uses those,
    # and QLoRA needs CUDA.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward"))
    # transformers 5 renamed the property that PEFT and TRL still read on every model they wrap.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._run(args) or 0
    except UserError as e:
        _end_progress_bars()
        print(f"dispatchtune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        print(f"dispatchtune {args.command}: interrupted", file=sys.stderr)
        return 130


def _end_progress_bars() -> None:
    """A stage stopped mid-way leaves its progress bar open on an unfinished line: close it, so the message that
    follows starts a line of its own."""
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())

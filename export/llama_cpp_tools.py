"""llama.cpp's own converter and quantiser, without a llama.cpp checkout.

PyPI has no llama.cpp tools package, but the llama-cpp-python source distribution vendors a whole llama.cpp:
`convert_hf_to_gguf.py` (with its model classes in `conversion/` and the `gguf-py` it was written against; PyPI's
`gguf` under the same version number is older and breaks it) and the library whose `llama_model_quantize` is what
the `llama-quantize` binary calls. So the converter comes from that sdist, unpacked once into a cache directory
(or from `LLAMA_CPP_DIR`, a user's own llama.cpp checkout), and quantisation goes through the installed
`llama_cpp` package (or `LLAMA_CPP_DIR`'s `llama-quantize` binary where the user built one).

Both run in child processes: a crash or a kill there cannot leave this process half-way, their chatter goes to a
log shown only on failure, and the converter gets the `gguf` it needs without touching the one imported here. A
child dies with this process (Linux), so a killed export leaves no quantiser running. The converter runs as
llama.cpp ships it, except that remote code stays off: it asks transformers for `trust_remote_code=True` wherever it
loads a tokenizer, and a model directory's own Python files must never run on export.
`python -m dispatchtune.export.llama_cpp_tools fetch` unpacks the converter, and llama.cpp's tokenizer vocabularies
and published templates beside it (scripts/install_export_tools.sh calls it).
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from dispatchtune.atomic import commit, staging
from dispatchtune.errors import UserError

# The llama-cpp-python release whose converter is used when llama_cpp is not installed (the set-up pins the same).
DEFAULT_VERSION = "0.3.36"
CACHE_DIR = Path(os.environ.get("DISPATCHTUNE_CACHE", Path.home() / ".cache" / "dispatchtune"))
# What the converter needs of the vendored llama.cpp (the rest is C++ sources and unrelated scripts).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
# and of its models/ folder, in a folder of their own: the tokenizer test vocabularies with their vectors, and the
# published chat templates (real-vocabulary tiny models and their tests read them; see `models_dir`)
MODELS_PARTS = ("ggml-vocab-", "templates/")
# Types the converter writes itself (the unquantised ones) and the ones llama_model_quantize makes from those.
FLOAT_TYPES = ("f32", "f16", "bf16")
QUANT_FTYPES = {"q8_0": "MOSTLY_Q8_0", "q6_k": "MOSTLY_Q6_K", "q5_k_m": "MOSTLY_Q5_K_M", "q4_k_m": "MOSTLY_Q4_K_M"}
PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress bar line in a tool's log


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version: its converter matches the library that loads the files."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def converter_dir() -> Path:
    """A llama.cpp tree holding `convert_hf_to_gguf.py`: `LLAMA_CPP_DIR`, else the cache (fetched on first use)."""
    user_dir = os.environ.get("LLAMA_CPP_DIR")
    if user_dir:
        if not (Path(user_dir) / "convert_hf_to_gguf.py").is_file():
            raise UserError(f"LLAMA_CPP_DIR={user_dir} has no convert_hf_to_gguf.py; point it at a llama.cpp checkout")
        return Path(user_dir)
    cached = CACHE_DIR / f"llama.cpp-{llama_cpp_version()}"
    return cached if (cached / "convert_hf_to_gguf.py").is_file() else fetch_converter(llama_cpp_version())


def fetch_converter(version: str) -> Path:
    """Download llama-cpp-python `version`'s sources with pip (its cache serves repeats) and unpack the converter."""
    return _unpack(version, CACHE_DIR / f"llama.cpp-{version}", CONVERTER_PARTS, "convert_hf_to_gguf.py",
                   "llama.cpp's converter")


def models_dir() -> Path:
    """llama.cpp's `models/` folder: tokenizer vocabularies of published checkpoints with their test vectors
    (`ggml-vocab-<name>.gguf`, `.inp`, `.out`) and published chat templates (`templates/`). LLAMA_CPP_DIR's where that tree has
    one (a llama.cpp checkout does), else the one unpacked from the llama-cpp-python sources. Never downloads: what
    uses it (real-vocabulary tiny models, their tests) works offline, so a missing folder is a UserError naming the
    set-up step."""
    user_dir = os.environ.get("LLAMA_CPP_DIR")
    folder = CACHE_DIR / f"llama.cpp-{llama_cpp_version()}-models"
    if user_dir and (Path(user_dir) / "models" / "templates").is_dir():
        folder = Path(user_dir) / "models"
    if not (folder / "templates").is_dir():
        raise UserError(f"llama.cpp's tokenizer vocabularies are not in {folder}: run "
                        "scripts/install_export_tools.sh (or python -m dispatchtune.export.llama_cpp_tools fetch)")
    return folder


def fetch_models(version: str) -> Path:
    """Unpack llama.cpp's `models/` vocabularies, test vectors and templates from llama-cpp-python `version`."""
    return _unpack(version, CACHE_DIR / f"llama.cpp-{version}-models", MODELS_PARTS, "templates",
                   "llama.cpp's tokenizer vocabularies", strip="models/")


def _unpack(version: str, target: Path, parts: tuple[str, ...], marker: str, what: str, strip: str = "") -> Path:
    """Unpack the vendored llama.cpp paths starting with `parts` (less `strip`) into `target`, once; `marker` is a
    path that a complete unpacking holds."""
    with staging(target, directory=True) as tree:
        print(f"fetching {what} from the llama-cpp-python {version} sources (77 MB, once)")
        sdist = tree / ".sdist"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(sdist)]
        if subprocess.run(cmd).returncode:
            raise UserError(f"could not download llama-cpp-python {version}; set LLAMA_CPP_DIR to a llama.cpp "
                            "checkout, or run scripts/install_export_tools.sh where PyPI is reachable")
        vendor = f"llama_cpp_python-{version}/vendor/llama.cpp/{strip}"
        with tarfile.open(next(sdist.glob("llama_cpp_python-*.tar.gz"))) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(vendor)
                       and m.name[len(vendor):].startswith(parts)]
            for member in members:
                member.name = member.name[len(vendor):]
            tar.extractall(tree, members=members, filter="data")
        shutil.rmtree(sdist)
        try:
            commit(tree, target, replace=False)
        except FileExistsError:  # a concurrent fetch finished first: use its copy
            if not (target / marker).exists():
                raise
    return target


def supported_architectures(llama_cpp_dir: Path) -> set[str]:
    """The model classes (config.json `architectures`) the converter registers, read from its source.

    Parsed with `ast` rather than imported: importing the converter takes torch and seconds, and this runs first,
    to refuse a model before any work. Works for the monolithic convert_hf_to_gguf.py of older llama.cpp checkouts
    and for the `conversion/` package of newer ones.
    """
    names = set()
    for path in [llama_cpp_dir / "convert_hf_to_gguf.py", *sorted((llama_cpp_dir / "conversion").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "ModelBase"):
                names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def convert(model_dir: Path, out_file: Path, outtype: str, log: Path, *, extra_args: list[str] = ()) -> None:
    """Run llama.cpp's converter on a transformers model directory, writing `out_file` (type f32/f16/bf16);
    `extra_args` go to the converter as they are (a family's `gguf_converter_args`)."""
    cmd = [sys.executable, "-m", "dispatchtune.export.llama_cpp_tools", "convert", str(converter_dir()),
           str(model_dir), "--outfile", str(out_file), "--outtype", outtype, *extra_args]
    try:
        _run(cmd, log, f"llama.cpp's converter failed on {model_dir}")
    except UserError as e:
        if "pre-tokenizer was not recognized" not in str(e):
            raise
        raise UserError(f"{e} (llama.cpp knows the tokenizers of published models; one trained locally has no "
                        "GGUF pre-tokenizer)") from None


def quantize(src: Path, dst: Path, quant: str, log: Path) -> None:
    """Quantise a float GGUF to `quant` with llama.cpp's quantiser (the binary of LLAMA_CPP_DIR, if built)."""
    root = os.environ.get("LLAMA_CPP_DIR")
    binary = root and shutil.which("llama-quantize", path=os.pathsep.join([f"{root}/build/bin", root]))
    if binary:
        cmd = [binary, str(src), str(dst), quant.upper()]
    else:
        cmd = [sys.executable, "-m", "dispatchtune.export.llama_cpp_tools", "quantize", str(src), str(dst), quant]
    _run(cmd, log, f"llama.cpp's quantiser failed making {quant} from {src.name}")


def _run(cmd: list[str], log: Path, failure: str) -> None:
    """Run a tool with its output appended to `log`; on failure, a UserError with its last line, and the log kept
    in the system temp directory (the staging directory that holds `log` is about to be removed)."""
    # PYTHONSAFEPATH: the working directory is not put on the child's sys.path, so a user's own `gguf.py` or
    # `torch.py` there cannot stand in for the library (Python 3.11+).
    env = {**os.environ, "PYTHONSAFEPATH": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")]))}
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent())
    if proc.returncode:
        kept = Path(tempfile.mkstemp(prefix="dispatchtune-llama.cpp-", suffix=".log")[1])
        shutil.copyfile(log, kept)
        raise UserError(f"{failure}: {_cause(log.read_text(encoding='utf-8', errors='replace'))} (full log: {kept})")


def _cause(text: str) -> str:
    """The line of a tool's log that says why it failed: a full disk if that was it, else the last line that is
    not a progress bar."""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    full = [line for line in lines if "No space left on device" in line]
    said = [line for line in lines if not PROGRESS.search(line)]
    return (full or said or ["(no output)"])[-1]


def _die_with_parent():
    """A preexec_fn asking Linux to kill the child when this process dies (prctl PR_SET_PDEATHSIG), so a killed
    export leaves no converter or quantiser running on; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def arm():  # runs in the child, between fork and exec
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def _package_root() -> str:
    """The folder `dispatchtune` is imported from, so the child finds this very copy in any working directory."""
    import dispatchtune

    return str(Path(dispatchtune.__file__).resolve().parents[1])


# --- the child processes ---


def _convert_main(llama_cpp_dir: str, converter_args: list[str]) -> None:
    """convert_hf_to_gguf.main() with its own gguf-py first on the path and remote code off."""
    sys.path[:0] = [llama_cpp_dir, str(Path(llama_cpp_dir) / "gguf-py")]
    _never_trust_remote_code()
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *converter_args]
    convert_hf_to_gguf.main()


def _never_trust_remote_code() -> None:
    """Make transformers treat every `trust_remote_code=True` as False in this process.

    Every Auto class asks `resolve_trust_remote_code` before it runs a model directory's own code; answering with
    False makes a directory that ships code load with transformers' own class where it has one, or fail with
    transformers' message where it has none. Done before the Auto classes are imported (they import the function
    by name), and in any already imported.
    """
    import transformers.dynamic_module_utils as dynamic

    original = dynamic.resolve_trust_remote_code

    def never(trust_remote_code, *args, **kwargs):
        return original(False, *args, **kwargs)

    for module in [dynamic, *(m for name, m in sys.modules.items() if name.startswith("transformers."))]:
        if getattr(module, "resolve_trust_remote_code", None) is original:
            module.resolve_trust_remote_code = never


def _quantize_main(src: str, dst: str, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{QUANT_FTYPES[quant]}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params):
        sys.exit(f"llama_model_quantize failed for {src} -> {dst} ({quant})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatchtune.export.llama_cpp_tools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser("fetch", help="unpack llama.cpp's converter and its tokenizer vocabularies into the cache "
                                         "(what is not there yet)")
    fetch.add_argument("--version", default=None, help="llama-cpp-python version (default: the installed one)")
    conv = sub.add_parser("convert", help="(internal) run the converter")
    conv.add_argument("llama_cpp_dir")
    conv.add_argument("converter_args", nargs=argparse.REMAINDER)
    quant = sub.add_parser("quantize", help="(internal) run llama_model_quantize")
    quant.add_argument("src")
    quant.add_argument("dst")
    quant.add_argument("quant", choices=QUANT_FTYPES)
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        version = args.version or llama_cpp_version()
        target = CACHE_DIR / f"llama.cpp-{version}"
        models = CACHE_DIR / f"llama.cpp-{version}-models"
        try:
            done = (target / "convert_hf_to_gguf.py").is_file()
            print(f"llama.cpp converter: {target if done else fetch_converter(version)}")
            print(f"llama.cpp vocabularies: {models if (models / 'templates').is_dir() else fetch_models(version)}")
        except UserError as e:
            sys.exit(f"error: {e}")
    elif args.cmd == "convert":
        _convert_main(args.llama_cpp_dir, args.converter_args)
    else:
        _quantize_main(args.src, args.dst, args.quant)


if __name__ == "__main__":
    main()

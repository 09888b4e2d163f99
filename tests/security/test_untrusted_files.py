"""Files from elsewhere are data, never code: no pickle, and no archive extraction that a
crafted archive could turn against the machine (OWASP LLM Top 10: supply chain and model
theft/poisoning through model files).

The static checks read every module of ``src/slmops`` and refuse calls that unpickle or
extract, unless listed in ``JUSTIFIED`` with the reason it is safe. The behavioural checks
hand the loaders a pickle that would run a command, and expect a clear error and no command.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from slmops.errors import ModelError
from slmops.train.checkpoints import CheckpointError, load_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src" / "slmops"

# (module path, call) -> why this use is safe. Empty today: keep it short.
JUSTIFIED: dict[tuple[str, str], str] = {}

# Calls that deserialize with pickle (or can): module functions, by their dotted name.
UNPICKLING = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "jsonpickle.decode",
    "pandas.read_pickle",
    "pd.read_pickle",
    "yaml.unsafe_load",
    "yaml.full_load",
    "mlflow.pyfunc.load_model",
    "mlflow.sklearn.load_model",
    "mlflow.pytorch.load_model",
    "skops.io.load",
}
# Calls that unpack archives: members named ../x or /etc/x, links, and bombs live here.
EXTRACTING = {
    "zipfile.ZipFile",
    "tarfile.open",
    "tarfile.TarFile",
    "shutil.unpack_archive",
    "gzip.open",
    "gzip.decompress",
    "bz2.open",
    "bz2.decompress",
    "lzma.open",
    "lzma.decompress",
    "zlib.decompress",
    "py7zr.SevenZipFile",
    "rarfile.RarFile",
}
ARCHIVE_MODULES = {"zipfile", "tarfile", "gzip", "bz2", "lzma", "zlib", "py7zr", "rarfile"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def loader_of(call: ast.Call) -> str:
    """The Loader a ``yaml.load`` call names ('' when none)."""
    if len(call.args) > 1:
        return dotted(call.args[1])
    return next((dotted(k.value) for k in call.keywords if k.arg == "Loader"), "")


def findings(root: Path = SRC) -> list[tuple[str, str, int, str]]:
    """(module, call, line, problem) for each risky call in the package at ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = str(path.relative_to(root.parent))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=module)
        aliases: dict[str, str] = {}  # "from pickle import loads" -> loads: pickle.loads
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for name in node.names:
                    aliases[name.asname or name.name] = f"{node.module}.{name.name}"
                if node.module.split(".")[0] in ARCHIVE_MODULES:
                    found.append((module, node.module, node.lineno, "imports an archive module"))
            elif isinstance(node, ast.Import):
                for name in node.names:
                    if name.asname:
                        aliases[name.asname] = name.name
                    if name.name.split(".")[0] in ARCHIVE_MODULES:
                        found.append((module, name.name, node.lineno, "imports an archive module"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = dotted(node.func)
            head, _, rest = name.partition(".")
            name = (
                f"{aliases[head]}.{rest}" if head in aliases and rest else aliases.get(head, name)
            )
            if name in UNPICKLING:
                found.append((module, name, node.lineno, "unpickles"))
            elif name in EXTRACTING:
                found.append((module, name, node.lineno, "unpacks an archive"))
            elif name == "torch.load" and keyword(node, "weights_only") is not True:
                found.append((module, name, node.lineno, "torch.load without weights_only=True"))
            elif name in ("numpy.load", "np.load") and keyword(node, "allow_pickle") not in (
                None,
                False,
            ):
                found.append((module, name, node.lineno, "np.load with allow_pickle"))
            elif name == "yaml.load" and not loader_of(node).endswith("SafeLoader"):
                found.append((module, name, node.lineno, "yaml.load without a SafeLoader"))
            elif keyword(node, "trust_remote_code") not in (None, False):
                found.append((module, name, node.lineno, "trust_remote_code"))
            elif name in ("eval", "exec", "compile") and isinstance(node.func, ast.Name):
                found.append((module, name, node.lineno, "evaluates code"))
    return found


def test_nothing_in_the_package_unpickles_or_extracts_unjustified() -> None:
    unjustified = [f for f in findings() if (f[0], f[1]) not in JUSTIFIED]
    assert not unjustified, "\n".join(
        f"{module}:{line}: {call} {problem}" for module, call, line, problem in unjustified
    )


def test_the_scan_sees_what_it_is_looking_for(tmp_path: Path) -> None:
    """The scanner itself: each kind of risky call in a fake package is found."""
    package = tmp_path / "slmops"
    package.mkdir()
    (package / "bad.py").write_text(
        "import pickle, tarfile, torch, yaml\n"
        "import numpy as np\n"
        "from joblib import load\n"
        "from zipfile import ZipFile\n"
        "pickle.loads(b'')\n"
        "load('m.joblib')\n"
        "tarfile.open('a.tar').extractall()\n"
        "ZipFile('a.zip')\n"
        "torch.load('a.pt')\n"
        "torch.load('b.pt', weights_only=True)\n"
        "np.load('a.npy', allow_pickle=True)\n"
        "np.load('b.npy')\n"
        "yaml.load(text, Loader=yaml.Loader)\n"
        "yaml.load(text, Loader=yaml.SafeLoader)\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "eval('1')\n"
    )
    lines = sorted(line for _, _, line, _ in findings(package))
    # line 1 (tarfile import), 4 (zipfile import), then the calls on 5-9, 11, 13, 15, 16
    assert lines == [1, 4, 5, 6, 7, 8, 9, 11, 13, 15, 16]


class _RunsACommand:
    """A pickle that runs ``touch MARKER`` when loaded by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def write_evil_pickle(path: Path, marker: Path) -> Path:
    with path.open("wb") as handle:
        pickle.dump(_RunsACommand(marker), handle, protocol=2)
    return path


def test_a_training_checkpoint_with_a_hostile_optimizer_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    checkpoint = tmp_path / "step-000001"
    checkpoint.mkdir()
    (checkpoint / "state.json").write_text(json.dumps({"state": {}, "python_rng": []}))
    save_file({"w": torch.zeros(1)}, str(checkpoint / "trainable.safetensors"))
    marker = tmp_path / "ran"
    write_evil_pickle(checkpoint / "optimizer.pt", marker)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(checkpoint, {"w": torch.zeros(1)}, None)
    assert not marker.exists()


def tiny_checkpoint(folder: Path) -> Path:
    """A transformers checkpoint folder without weights: a 1-layer Llama config and a
    word-level tokenizer (what an hf: URI names)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    LlamaConfig(
        vocab_size=8,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
    ).save_pretrained(folder)
    words = WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, "hi": 3}, unk_token="<unk>")
    tokenizer = Tokenizer(words)
    tokenizer.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)
    return folder


def test_an_hf_checkpoint_whose_weights_are_a_hostile_pickle(tmp_path: Path) -> None:
    """transformers reads pytorch_model.bin with torch's weights-only unpickler; the refusal
    comes back as a ModelError (it was a raw UnpicklingError advising weights_only=False)."""
    pytest.importorskip("transformers")
    from slmops.models.transformers_backend import TransformersChatModel

    folder = tiny_checkpoint(tmp_path / "checkpoint")
    marker = tmp_path / "ran"
    write_evil_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match="not plain weights") as raised:
        TransformersChatModel(folder)
    assert "weights_only" not in str(raised.value)
    assert not marker.exists()

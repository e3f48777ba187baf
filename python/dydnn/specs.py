"""The network specs shipped with dydnn (docs/spec.md describes the format)."""
from pathlib import Path

_SPEC_DIR = Path(__file__).resolve().parent / "specs"


def available_specs():
    """Names of the shipped specs (``fashion_mnist_default``, ``mnist_small``, ``cifar10_alexnet``)."""
    return sorted(p.stem for p in _SPEC_DIR.glob("*.spec"))


def spec_path(name):
    """Path of a shipped spec by name; raises ``ValueError`` listing the valid names."""
    path = _SPEC_DIR / f"{name}.spec"
    if not path.is_file():
        raise ValueError(f"[dydnn.spec] unknown spec '{name}' (valid: {', '.join(available_specs())})")
    return path

"""How far a checkpoint file is from its minimum: the bytes of the model's tensors plus the optimizer's."""

from pathlib import Path

import torch

from experiments.checkpoint.io import load_checkpoint


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def checkpoint_size_report(path: Path) -> dict:
    ckpt = load_checkpoint(path)
    weights = _tensor_bytes(ckpt.get("state_dict", {}))
    optimizer = _tensor_bytes(ckpt.get("optimizer_states", []))
    file_bytes = Path(path).stat().st_size
    params = sum(t.numel() for t in ckpt.get("state_dict", {}).values() if t.is_floating_point())
    return {
        "path": str(path),
        "file_bytes": file_bytes,
        "parameters": params,
        "weight_bytes": weights,
        "optimizer_bytes": optimizer,
        "minimum_bytes": weights + optimizer,
        "ratio": file_bytes / max(1, weights + optimizer),
    }

"""ONNX export of policy checkpoints, and an ONNX Runtime backend that runs them.

    export_onnx("runs/x/checkpoints/last", "runs/x/onnx")       # writes the folder below
    policy, ck = load_policy("runs/x/onnx")                     # backend "auto": onnxruntime here

An export folder holds the inference networks, in eval mode with the weights the checkpoint
holds (the trainer saves its EMA weights there):

- diffusion: ``encoder.onnx`` (normalised observation history -> conditioning, what
  ``DiffusionPolicy.encode_obs`` computes) and ``denoiser.onnx`` (``denoise(x_t, t, cond)``,
  one network evaluation). Sampling stays in Python, so every sampler of
  :mod:`robot_rl.runtime.samplers` (cold DDPM / DDIM, the RTI warm start) runs unchanged --
  except real-time chunking's guidance, which needs a vector-Jacobian product through the
  denoiser that an ONNX graph does not give: that is one clear error (use ``warm`` or
  ``cold``, or the torch backend).
- ACT, MLP-BC: ``policy.onnx``, the whole network (normalised observation history ->
  normalised action chunk, ``normalized_chunks``).
- ``manifest.json``: the policy type and config, the normaliser (modes, scale and offset),
  the robot spec and its fingerprint, the checkpoint's metadata (task, action mode, image
  size ...), each file's name, sha256 and input / output names, shapes and dtypes, the
  opset, the library versions, and the parity check run after export (ONNX Runtime vs torch,
  max abs difference on a sample batch).

Graph inputs are the observation keys themselves: state keys as normalised float32
(B, n_obs_steps, dim), cameras as uint8 (B, n_obs_steps, H, W, 3) at the size the policy was
trained at. Only the batch axis is dynamic. Normalisation (cheap) stays in Python, with the
manifest's normaliser.

:func:`load_onnx_policy` returns an object of the checkpoint's own policy class (a subclass
routing its networks through ``onnxruntime.InferenceSession`` on the CPU), so
``predict_chunks``, the samplers, the evaluator and the inference node use it unchanged;
``policy.backend == "onnxruntime"``. :func:`load_policy` picks the backend for a path.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from robot_rl.policies.base import POLICIES, CheckpointError, Policy, import_policies, load_checkpoint, trained_robot
from robot_rl.policies.common.normalizer import Normalizer
from robot_rl.spec import RobotSpec, SpecError

EXPORT_FORMAT = 1
EXPORT_KIND = "robot_rl-onnx"
MANIFEST = "manifest.json"
BACKENDS = ("auto", "torch", "onnxruntime")
DEFAULT_OPSET = 17
PARITY_TOL = 1e-3  # max abs difference ORT vs torch on the sample batch above which an export is refused
INSTALL_HINT = "pip install robot-rl[onnx]"


class OnnxBackendError(RuntimeError):
    """Something an ONNX export cannot do (training, gradients through its networks)."""


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(f"the onnxruntime backend needs the onnxruntime package: {INSTALL_HINT}") from None
    return onnxruntime


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise CheckpointError(f"ONNX export needs the onnx and onnxruntime packages: {INSTALL_HINT}") from None
    return onnx


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_diffusion_policy(policy: Policy | type[Policy]) -> bool:
    """Exported as encoder + denoiser (sampling stays in Python), not as one graph."""
    return all(hasattr(policy, a) for a in ("encode_obs", "denoise", "sample"))


# -- the graphs: positional-tensor wrappers around the policy's own methods --------------------------
class _EncoderGraph(nn.Module):
    """(state and image tensors in ``keys`` order) -> ``policy.encode_obs``."""

    def __init__(self, policy: Policy, keys: Sequence[str]):
        super().__init__()
        self.policy = policy
        self.keys = list(keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.encode_obs(dict(zip(self.keys, obs)))


class _DenoiserGraph(nn.Module):
    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.policy.denoise(x_t, t, cond)


class _PolicyGraph(nn.Module):
    """(state and image tensors in ``keys`` order) -> ``policy.normalized_chunks``."""

    def __init__(self, policy: Policy, keys: Sequence[str]):
        super().__init__()
        self.policy = policy
        self.keys = list(keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.normalized_chunks(dict(zip(self.keys, obs)))


def image_hw(ck: Mapping[str, Any], camera_key: str) -> tuple[int, int]:
    """(H, W) the policy sees for a camera: the metadata's image_size, else the spec's camera."""
    size = (ck.get("metadata") or {}).get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[1]), int(size[0])
    if isinstance(size, (int, float)) and size:
        return int(size), int(size)
    spec = RobotSpec.from_dict(ck["robot_spec"])
    try:
        cam = spec.camera(camera_key.removeprefix("image_"))
    except SpecError as e:
        raise CheckpointError(f"cannot tell the image size of {camera_key!r} (no image_size in the checkpoint's "
                              f"metadata; {e})") from None
    return int(cam.height), int(cam.width)


def _sample_obs(policy: Policy, ck: Mapping[str, Any], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random normalised states and uint8 images of the shapes the policy takes."""
    c = policy.config
    g = torch.Generator().manual_seed(seed)
    obs = {k: torch.randn(batch, c.n_obs_steps, int(c.state_dims[k]), generator=g) for k in c.state_keys}
    for k in c.cameras:
        h, w = image_hw(ck, k)
        obs[k] = torch.randint(0, 256, (batch, c.n_obs_steps, h, w, 3), generator=g, dtype=torch.uint8)
    return obs


def _io_spec(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": ["batch", *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")}
            for n, t in zip(names, tensors)]


def _export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
                  path: Path, opset: int) -> None:
    """torch.onnx (TorchScript exporter) with a dynamic batch axis; written to a temporary name
    first, so a failed export leaves no half-written file under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    module.eval()
    # grad mode on: in eval mode without grad, nn.TransformerEncoderLayer / MultiheadAttention
    # take fused fast paths (aten::_transformer_encoder_layer_fwd) the ONNX exporter cannot write
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python values in shapes
        try:
            torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in inputs + outputs}, opset_version=int(opset),
                              do_constant_folding=True, dynamo=False)
        except Exception as e:  # noqa: BLE001 -- an exporter failure names the file and the cause
            tmp.unlink(missing_ok=True)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"ONNX export of {path.name} failed (opset {opset}): {first}") from None
    os.replace(tmp, path)


def _session(path: Path, threads: int | None):
    ort = _import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads or torch.get_num_threads()))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    # as torch's OpenMP threads (robot_rl/__init__.py): no spin-waiting pool threads under
    # OMP_WAIT_POLICY=PASSIVE, so a session next to a control loop or training leaves the cores alone
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if passive else "1")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- ORT raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"corrupt ONNX file {path}: onnxruntime cannot load it ({first})") from None


def _max_diff(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b.detach().double().numpy()))) if a.size else 0.0


# -- export -----------------------------------------------------------------------------------------
def export_onnx(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                tolerance: float = PARITY_TOL) -> Path:
    """Export a checkpoint folder's inference networks to ``out_dir`` (see the module docstring);
    returns ``out_dir/manifest.json``. After writing, ONNX Runtime runs each graph once on a
    random sample batch (another batch size than the traced one) and its output is compared
    with torch's; a difference above `tolerance` refuses the export (no manifest written)."""
    onnx = _import_onnx()
    ort = _import_ort()
    failed = import_policies()
    src = Path(checkpoint)
    if (src / MANIFEST).is_file() and not (src / "config.json").is_file():
        raise CheckpointError(f"{src} is already an ONNX export; export the torch checkpoint it came from")
    try:
        policy, ck = load_checkpoint(src, device="cpu")
    except CheckpointError as e:
        if "unknown policy type" in str(e) and failed:
            raise CheckpointError(f"{e} (policy modules that failed to import: {failed})") from None
        raise
    policy.eval()
    out = Path(out_dir)
    if out.resolve() == src.resolve():
        raise CheckpointError(f"out={out} is the checkpoint folder itself; export into another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-finished export must not look complete
    c = policy.config
    keys = list(c.state_keys) + list(c.cameras)
    trace_obs = _sample_obs(policy, ck, batch=2, seed=0)
    check_obs = _sample_obs(policy, ck, batch=3, seed=1)  # another batch size: the batch axis is dynamic
    files: dict[str, dict[str, Any]] = {}
    parity: dict[str, float] = {}

    def write(name: str, module: nn.Module, args: tuple, inputs: list[str], outputs: list[str],
              check_args: tuple) -> None:
        path = out / f"{name}.onnx"
        with torch.no_grad():
            ref = module(*check_args)
        _export_graph(module, args, inputs, outputs, path, opset)
        try:
            onnx.checker.check_model(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"ONNX export of {path} is not a valid model: {str(e).splitlines()[0]}") from None
        sess = _session(path, threads=1)
        got = sess.run(None, {n: a.numpy() for n, a in zip(inputs, check_args)})[0]
        parity[name] = _max_diff(got, ref)
        files[name] = {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
                       "inputs": _io_spec(inputs, args), "outputs": _io_spec(outputs, [ref])}

    if is_diffusion_policy(policy):
        enc = _EncoderGraph(policy, keys)
        write("encoder", enc, tuple(trace_obs[k] for k in keys), keys, ["cond"], tuple(check_obs[k] for k in keys))
        with torch.no_grad():
            cond_t, cond_c = policy.encode_obs(trace_obs), policy.encode_obs(check_obs)
        g = torch.Generator().manual_seed(2)
        T = int(c.num_train_timesteps)
        x_t = torch.randn(2, c.horizon, c.action_dim, generator=g)
        x_c = torch.randn(3, c.horizon, c.action_dim, generator=g)
        write("denoiser", _DenoiserGraph(policy), (x_t, torch.tensor([T - 1, 0]), cond_t), ["x_t", "t", "cond"],
              ["out"], (x_c, torch.tensor([T // 2, 1, T - 1]), cond_c))
    elif hasattr(policy, "normalized_chunks"):
        write("policy", _PolicyGraph(policy, keys), tuple(trace_obs[k] for k in keys), keys, ["actions"],
              tuple(check_obs[k] for k in keys))
    else:
        raise CheckpointError(f"checkpoint {src}: a {policy.type_name!r} policy has no ONNX export "
                              "(it needs encode_obs + denoise, or normalized_chunks)")
    bad = {k: v for k, v in parity.items() if not v <= tolerance}
    if bad:
        raise CheckpointError(f"ONNX export of {src}: onnxruntime disagrees with torch on "
                              + ", ".join(f"{k} by {v:.3g}" for k, v in bad.items()) + f" (tolerance {tolerance:g})")
    norm = policy.normalizer
    manifest = {
        "kind": EXPORT_KIND, "format": EXPORT_FORMAT, "backend": "onnxruntime",
        "policy": policy.type_name, "config": asdict(c),
        "normalizer_modes": dict(norm.modes),
        "normalizer": {k: {"mode": norm.modes[k], "scale": norm.scale[k].tolist(), "offset": norm.offset[k].tolist()}
                       for k in norm.scale},
        "robot_spec": ck["robot_spec"], "robot_fingerprint": ck["robot_fingerprint"],
        "metadata": dict(ck.get("metadata") or {}),
        "source_checkpoint": str(src.resolve()),
        "files": files, "opset": int(opset),
        "parity": {"max_abs_diff": parity, "batch": 3, "tolerance": tolerance},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "python": platform.python_version()},
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST


# -- the ONNX Runtime backend -------------------------------------------------------------------------
class _Graph:
    """One InferenceSession and the input / output layout its manifest entry promises."""

    def __init__(self, path: Path, entry: Mapping[str, Any], threads: int | None):
        self.path = path
        self.session = _session(path, threads)
        self.inputs = [(i["name"], tuple(i["shape"][1:]), np.dtype(i["dtype"])) for i in entry["inputs"]]
        got = [i.name for i in self.session.get_inputs()]
        want = [n for n, _, _ in self.inputs]
        if got != want:
            raise CheckpointError(f"corrupt ONNX file {path}: its inputs {got} are not the manifest's {want}")
        self.output = self.session.get_outputs()[0].name

    def __call__(self, *arrays: torch.Tensor | np.ndarray) -> torch.Tensor:
        feed = {}
        for (name, shape, dtype), a in zip(self.inputs, arrays):
            x = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
                raise ValueError(f"{name}: {self.path.name} takes (batch, {', '.join(map(str, shape))}), "
                                 f"got {tuple(x.shape)}")
            if x.dtype != dtype and not np.can_cast(x.dtype, dtype, "same_kind"):
                raise ValueError(f"{name}: {self.path.name} takes {dtype} (uint8 frames for cameras), got {x.dtype}")
            feed[name] = np.ascontiguousarray(x, dtype=dtype)
        return torch.from_numpy(self.session.run([self.output], feed)[0])


class OnnxPolicyMixin:
    """What every ONNX-backed policy shares; :class:`OnnxDiffusionMixin` and
    :class:`OnnxChunkMixin` route the networks. Mixed in front of the checkpoint's own policy
    class (:func:`onnx_policy_class`), which keeps everything else: sampling, schedulers,
    normalisation, ``predict_chunks``."""

    backend = "onnxruntime"
    graphs: dict[str, _Graph]
    export_dir: Path

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # CPUExecutionProvider: inputs and outputs live on the CPU

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise OnnxBackendError(f"{self.export_dir} is an ONNX export (inference only): train the torch checkpoint")


class OnnxDiffusionMixin(OnnxPolicyMixin):
    """``encode_obs`` and ``denoise`` (what the samplers call) run encoder.onnx / denoiser.onnx."""

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        g = self.graphs["encoder"]
        return g(*(obs[n] for n, _, _ in g.inputs))

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x_t.requires_grad:
            raise OnnxBackendError(
                f"{self.export_dir} is an ONNX export: its denoiser gives no gradients, which real-time "
                "chunking (sampler mode 'rtc') needs for its guidance; use mode 'warm' or 'cold', or the torch "
                "checkpoint (backend=torch)")
        t = torch.as_tensor(t, dtype=torch.int64)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        return self.graphs["denoiser"](x_t, t, cond)


class OnnxChunkMixin(OnnxPolicyMixin):
    """``normalized_chunks`` (ACT, MLP-BC: the whole network) runs policy.onnx."""

    def normalized_chunks(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        g = self.graphs["policy"]
        return g(*(obs[n] for n, _, _ in g.inputs))


_ONNX_CLASSES: dict[type, type] = {}


def graph_names(cls: type[Policy]) -> tuple[str, ...]:
    """The ONNX files an export of a policy class holds (without .onnx)."""
    return ("encoder", "denoiser") if is_diffusion_policy(cls) else ("policy",)


def onnx_policy_class(cls: type[Policy]) -> type[Policy]:
    """``Onnx<cls>``: the policy class with its networks run by ONNX Runtime (isinstance of cls)."""
    if cls not in _ONNX_CLASSES:
        mixin = OnnxDiffusionMixin if is_diffusion_policy(cls) else OnnxChunkMixin
        _ONNX_CLASSES[cls] = type(f"Onnx{cls.__name__}", (mixin, cls), {"__module__": __name__})
    return _ONNX_CLASSES[cls]


def _read_manifest(path: Path) -> dict[str, Any]:
    mf = path / MANIFEST
    if not mf.is_file():
        hint = (" (it is a torch checkpoint: use backend=torch, or export it: robot-rl export "
                f"{path} format=onnx out=DIR)") if (path / "config.json").is_file() else ""
        raise CheckpointError(f"no ONNX export at {path} (needs {MANIFEST}){hint}")
    try:
        m = json.loads(mf.read_text())
    except ValueError as e:
        raise CheckpointError(f"ONNX export {path}: {MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("kind") != EXPORT_KIND:
        raise CheckpointError(f"{mf} is not a robot_rl ONNX export manifest")
    if m.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"ONNX export {path}: format {m.get('format')!r}, this robot_rl reads {EXPORT_FORMAT}")
    missing = [k for k in ("policy", "config", "normalizer", "robot_spec", "files") if k not in m]
    if missing:
        raise CheckpointError(f"ONNX export {path}: {MANIFEST} lacks {missing}")
    return m


def load_onnx_policy(path: str | os.PathLike, spec: RobotSpec | None = None,
                     threads: int | None = None) -> tuple[Policy, dict]:
    """(policy, manifest dict) of an export folder: an object of the checkpoint's policy class
    whose networks run in ONNX Runtime on the CPU with ``threads`` intra-op threads (default:
    torch's current setting). Refuses a missing or corrupt file (sha256, onnxruntime's own
    check), a manifest for another robot than `spec` -- one clear error each."""
    p = Path(path)
    m = _read_manifest(p)
    _import_ort()
    kind = m["policy"]
    if kind not in POLICIES:
        failed = import_policies()
        if kind not in POLICIES:
            raise CheckpointError(f"ONNX export {p}: unknown policy type {kind!r}; known: {sorted(POLICIES)}"
                                  + (f" (policy modules that failed to import: {failed})" if failed else ""))
    trained_robot(m["robot_spec"], spec, f"ONNX export {p}")
    cls = POLICIES[kind]
    try:
        config = cls.config_class.from_dict(m["config"])
        norm = m["normalizer"]
        normalizer = Normalizer({k: v["scale"] for k, v in norm.items()}, {k: v["offset"] for k, v in norm.items()},
                                {k: v["mode"] for k, v in norm.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"ONNX export {p}: {MANIFEST} has a broken config or normaliser ({e})") from None
    want = graph_names(cls)
    if sorted(m["files"]) != sorted(want):
        raise CheckpointError(f"ONNX export {p}: a {kind} export has {list(want)}, the manifest lists {sorted(m['files'])}")
    graphs = {}
    for name in want:
        entry = m["files"][name]
        f = p / entry["file"]
        if not f.is_file():
            raise CheckpointError(f"ONNX export {p}: {entry['file']} is missing")
        digest = sha256(f)
        if digest != entry["sha256"]:
            raise CheckpointError(f"corrupt ONNX file {f}: sha256 {digest[:12]}... does not match the manifest's "
                                  f"{entry['sha256'][:12]}... (re-export it)")
        graphs[name] = _Graph(f, entry, threads)
    policy = onnx_policy_class(cls)(config, normalizer)  # a fresh torch policy: config checks, schedules, buffers
    # drop its (randomly initialised) networks: the sessions run them, and nothing may use stale weights
    for name in list(policy._modules):
        delattr(policy, name)
    for name in list(policy._parameters):
        delattr(policy, name)
    policy.graphs = graphs
    policy.export_dir = p
    ck = dict(m)
    ck["export_dir"] = str(p)
    return policy.eval(), ck


# -- one entry point for both backends ------------------------------------------------------------------
def checkpoint_json(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's config.json, or an export's manifest.json (policy config, robot spec,
    metadata: the same keys), without loading weights; {} when neither is readable."""
    for name in ("config.json", MANIFEST):
        try:
            return json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
    return {}


def check_cameras(cameras: Sequence[str], spec: RobotSpec, what: str) -> None:
    """A policy's cameras (``image_<name>``) must be cameras of `spec`."""
    have = [c.name for c in spec.cameras]
    lacking = [c for c in cameras if c.removeprefix("image_") not in have]
    if lacking:
        raise CheckpointError(f"{what} needs cameras {[c.removeprefix('image_') for c in lacking]} that robot "
                              f"{spec.name!r} lacks (it has {have})")


def resolve_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """``torch`` or ``onnxruntime`` for a path: ``auto`` is onnxruntime where the path holds an
    export's manifest.json, else torch."""
    if backend not in BACKENDS:
        raise CheckpointError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    p = Path(path)
    if backend == "auto":
        return "onnxruntime" if (p / MANIFEST).is_file() and not (p / "config.json").is_file() else "torch"
    if backend == "torch" and (p / MANIFEST).is_file() and not (p / "config.json").is_file():
        raise CheckpointError(f"{p} is an ONNX export: load it with backend=onnxruntime (or auto), or pass the "
                              "torch checkpoint it came from")
    return backend


def load_policy(path: str | os.PathLike, backend: str = "auto", spec: RobotSpec | None = None,
                device: str | None = None, threads: int | None = None) -> tuple[Policy, dict]:
    """(policy in eval mode, checkpoint dict) from a torch checkpoint folder or an ONNX export
    folder; `backend`: ``torch``, ``onnxruntime`` or ``auto`` (see :func:`resolve_backend`).
    `device` is the torch backend's (onnxruntime runs on the CPU); `threads` onnxruntime's
    intra-op threads. With `spec`, a checkpoint for another robot, or one needing a camera the
    robot lacks, is refused."""
    kind = resolve_backend(path, backend)
    if kind == "onnxruntime":
        policy, ck = load_onnx_policy(path, spec, threads)
        what = f"ONNX export {path}"
    else:
        failed = import_policies()
        try:
            policy, ck = load_checkpoint(path, spec, device)
        except CheckpointError as e:
            if "unknown policy type" in str(e) and failed:
                raise CheckpointError(f"{e} (policy modules that failed to import: {failed})") from None
            raise
        what = f"checkpoint {path}"
    if spec is not None:
        check_cameras(policy.config.cameras, spec, what)
    return policy, ck


__all__ = ["BACKENDS", "MANIFEST", "OnnxBackendError", "OnnxChunkMixin", "OnnxDiffusionMixin", "OnnxPolicyMixin",
           "check_cameras", "checkpoint_json", "export_onnx", "graph_names", "load_onnx_policy", "load_policy", "onnx_policy_class",
           "resolve_backend", "sha256"]

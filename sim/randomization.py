"""Domain randomization as data: terms read from ``robot_rl/conf/randomization/<name>.yaml``.

The vocabulary is Isaac Lab's / mjlab's event terms, so a file reads the same there:

```yaml
name: so101_physics
terms:
  - name: cube_friction          # free text, for logs and errors
    field: geom_friction         # what it changes (FIELDS below)
    names: [cube]                # which elements (regexes on MuJoCo names; groups: arm, objects, robot; default: all)
    operation: scale             # add | scale | abs
    distribution: uniform        # uniform | log_uniform | gaussian
    range: [0.5, 1.5]            # uniform / log_uniform: [low, high]; gaussian: [mean, std]
    mode: reset                  # startup (once) | reset (every episode) | interval (every interval_steps)
```

Every term applies to the *nominal* value cached when the randomizer was built, so repeated
resets never accumulate; each selected element draws its own value; the draws come from the
generator the env passes (seeded per env, so every env of a vector env draws its own).

Fields:

| group | field | element | what |
|---|---|---|---|
| physics | ``geom_friction`` | geom | sliding friction |
| physics | ``body_mass`` | body | mass (inertia scaled with it) |
| physics | ``body_com`` | body | centre of mass offset (m, per axis) |
| physics | ``joint_damping`` / ``joint_armature`` / ``joint_frictionloss`` | joint | passive joint terms |
| physics | ``actuator_kp`` / ``actuator_kv`` / ``actuator_forcerange`` | actuator | position-servo gains, force limits |
| sensing | ``joint_offset`` | joint | encoder bias added to the measured joint positions (rad) |
| timing, noise | ``action_delay`` | - | control steps between a command and its effect (per episode, rounded) |
| timing, noise | ``obs_delay`` | - | control steps by which every observation (cameras included) lags (per episode, rounded) |
| timing, noise | ``obs_noise`` | - | std of Gaussian noise on joint_pos / joint_vel / ee_pos |
| visuals | ``light_pos`` / ``light_diffuse`` | light | position (m), colour and intensity |
| visuals | ``geom_rgba`` | geom | colour (alpha kept) |
| visuals | ``camera_pos`` / ``camera_fovy`` | camera | pose jitter (m), field of view (deg) |
| visuals | ``image_noise`` | - | std of Gaussian noise on camera frames (0..255) |
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robot_rl.sim.twin import mat_to_quat

OPERATIONS = ("add", "scale", "abs")
# element groups a term's names may use beside regexes: the arm's joints / actuators / dofs,
# the task's free objects (bodies and their geoms), the robot's bodies and geoms (links, hand, fingers)
GROUPS = ("arm", "objects", "robot")
DISTRIBUTIONS = ("uniform", "log_uniform", "gaussian")
MODES = ("startup", "reset", "interval")
# field -> (element kind, MjModel attribute, columns it touches or None for all)
MODEL_FIELDS: dict[str, tuple[str, str, Any]] = {
    "geom_friction": ("geom", "geom_friction", [0]),
    "body_mass": ("body", "body_mass", None),
    "body_com": ("body", "body_ipos", None),
    "joint_damping": ("dof", "dof_damping", None),
    "joint_armature": ("dof", "dof_armature", None),
    "joint_frictionloss": ("dof", "dof_frictionloss", None),
    "actuator_kp": ("actuator", "actuator_gainprm", [0]),
    "actuator_kv": ("actuator", "actuator_biasprm", [2]),  # -kv, as MuJoCo stores a position servo
    "actuator_forcerange": ("actuator", "actuator_forcerange", None),
    "light_pos": ("light", "light_pos", None),
    "light_diffuse": ("light", "light_diffuse", None),
    "geom_rgba": ("geom", "geom_rgba", [0, 1, 2]),
    "camera_pos": ("camera", "cam_pos", None),
    "camera_fovy": ("camera", "cam_fovy", None),
}
# fields drawn per column (a position per axis, a colour per channel); the others per element
PER_COLUMN = ("body_com", "light_pos", "camera_pos", "light_diffuse", "geom_rgba")
# texture pixels (``tex_data``, 0..1 per channel here): drawn per texel and channel, so a
# scale or add changes the pattern, not only its tint; elements are the model's textures
TEXTURE_FIELDS = ("texture_rgb",)
# values a field cannot leave, whatever a term draws
PHYSICAL_BOUNDS: dict[str, tuple[float, float]] = {
    "geom_friction": (0.0, np.inf), "body_mass": (1e-6, np.inf), "joint_damping": (0.0, np.inf),
    "joint_armature": (0.0, np.inf), "joint_frictionloss": (0.0, np.inf), "actuator_kp": (0.0, np.inf),
    "actuator_kv": (-np.inf, 0.0), "light_diffuse": (0.0, 1.0), "geom_rgba": (0.0, 1.0), "camera_fovy": (1.0, 179.0),
    "texture_rgb": (0.0, 1.0)}
STATE_FIELDS = ("joint_offset", "action_delay", "obs_delay", "obs_noise", "image_noise")
# a fixed perturbation (``robot-rl eval ... twin.<field>=value``): the operation and elements a
# bare value means, per field (friction of every geom scaled, object masses scaled, ...)
PERTURB_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "geom_friction": ("scale", ()), "body_mass": ("scale", ("objects",)), "body_com": ("add", ("objects",)),
    "joint_damping": ("scale", ("arm",)), "joint_armature": ("scale", ("arm",)),
    "joint_frictionloss": ("add", ("arm",)), "actuator_kp": ("scale", ("arm",)), "actuator_kv": ("scale", ("arm",)),
    "actuator_forcerange": ("scale", ("arm",)), "joint_offset": ("add", ("arm",)),
    "light_pos": ("add", ()), "light_diffuse": ("scale", ()), "geom_rgba": ("scale", ("objects", "table")),
    "camera_pos": ("add", ()), "camera_fovy": ("add", ()), "texture_rgb": ("scale", ()),
    "action_delay": ("abs", ()), "obs_delay": ("abs", ()), "obs_noise": ("abs", ()), "image_noise": ("abs", ()),
}
FIELDS = tuple(MODEL_FIELDS) + TEXTURE_FIELDS + STATE_FIELDS
CONF_DIR = Path(__file__).resolve().parent.parent / "robot_rl" / "conf" / "randomization"


class RandomizationError(ValueError):
    """A randomization file or term that cannot be applied (one line naming the cause)."""


def load_named_yaml(name_or_file: "str | Path", folder: Path, what: str) -> "tuple[Any, Path]":
    """(contents, path) of a YAML file, or of ``<folder>/<name>.yaml`` for a bare name; one
    RandomizationError naming the shipped names when neither exists, or the YAML error."""
    import yaml
    p = Path(str(name_or_file))
    if not p.suffix and not p.exists():
        p = folder / f"{name_or_file}.yaml"
    if not p.is_file():
        have = sorted(x.stem for x in folder.glob("*.yaml"))
        raise RandomizationError(f"no {what} {str(name_or_file)!r}: not a file, and not one of {have}")
    try:
        return yaml.safe_load(p.read_text()) or {}, p
    except yaml.YAMLError as e:
        raise RandomizationError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None


@dataclass(frozen=True)
class Term:
    name: str
    field: str
    operation: str = "scale"
    distribution: str = "uniform"
    range: tuple[float, float] = (1.0, 1.0)
    mode: str = "reset"
    names: tuple[str, ...] = ()
    interval_steps: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> "Term":
        what = f"{where}term {d.get('name', d.get('field', '?'))!r}"
        known = {"name", "field", "operation", "distribution", "range", "mode", "names", "interval_steps"}
        unknown = set(d) - known
        if unknown:
            raise RandomizationError(f"{what}: unknown keys {sorted(unknown)}; a term has {sorted(known)}")
        f = d.get("field")
        if f not in FIELDS:
            raise RandomizationError(f"{what}: field must be one of {', '.join(FIELDS)}; got {f!r}")
        t = cls(name=str(d.get("name") or f), field=f, operation=str(d.get("operation", "scale")),
                distribution=str(d.get("distribution", "uniform")),
                range=tuple(float(x) for x in d.get("range", (1.0, 1.0))), mode=str(d.get("mode", "reset")),
                names=tuple(str(n) for n in (d.get("names") or ())), interval_steps=int(d.get("interval_steps", 0)))
        for key, allowed in (("operation", OPERATIONS), ("distribution", DISTRIBUTIONS), ("mode", MODES)):
            if getattr(t, key) not in allowed:
                raise RandomizationError(f"{what}: {key} must be one of {', '.join(allowed)}; got {getattr(t, key)!r}")
        if len(t.range) != 2:
            raise RandomizationError(f"{what}: range must be [low, high] (gaussian: [mean, std]); got {list(t.range)}")
        lo, hi = t.range
        if t.distribution == "gaussian" and hi < 0:
            raise RandomizationError(f"{what}: a gaussian's std must be >= 0; got {hi}")
        if t.distribution != "gaussian" and lo > hi:
            raise RandomizationError(f"{what}: range low {lo} > high {hi}")
        if t.distribution == "log_uniform" and lo <= 0:
            raise RandomizationError(f"{what}: log_uniform needs a positive range; got {list(t.range)}")
        if t.mode == "interval" and t.interval_steps < 1:
            raise RandomizationError(f"{what}: mode interval needs interval_steps >= 1")
        if t.field in STATE_FIELDS and t.field != "joint_offset" and t.operation != "abs":
            raise RandomizationError(f"{what}: {t.field} has no nominal value to {t.operation}; use operation abs")
        return t

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        lo, hi = self.range
        if self.distribution == "uniform":
            return rng.uniform(lo, hi, n)
        if self.distribution == "log_uniform":
            return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        return rng.normal(lo, hi, n)


@dataclass(frozen=True)
class Randomization:
    name: str
    terms: tuple[Term, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, name_or_file: "str | Path | Mapping[str, Any] | Randomization") -> "Randomization":
        """A name in robot_rl/conf/randomization, a YAML path, a mapping, or a Randomization."""
        if isinstance(name_or_file, Randomization):
            return name_or_file
        if isinstance(name_or_file, Mapping):
            d, where = dict(name_or_file), ""
        else:
            d, p = load_named_yaml(name_or_file, CONF_DIR, "randomization")
            where = f"{p.name}: "
        terms = d.get("terms") if isinstance(d, Mapping) else None
        if isinstance(terms, Sequence) and not isinstance(terms, (str, bytes)):  # a list, or an omegaconf ListConfig
            d = {**d, "terms": list(terms)}
        if not isinstance(d, Mapping) or not isinstance(d.get("terms"), list):
            raise RandomizationError(f"{where}a randomization file holds 'terms: [...]'")
        return cls(name=str(d.get("name") or "randomization"),
                   terms=tuple(Term.from_dict(t, where) for t in d["terms"]))

    @classmethod
    def fixed(cls, perturbation: Mapping[str, Any], name: str = "perturbation") -> "Randomization":
        """A fixed perturbation as terms: ``{field: value}`` (the operation and elements
        ``PERTURB_DEFAULTS`` gives the field: ``geom_friction: 0.5`` halves every friction,
        ``action_delay: 3`` delays by 3 steps) or ``{field: {value: v, operation: ..., names: [...]}}``.
        Every episode gets exactly that value."""
        terms = []
        for f, v in perturbation.items():
            if f not in PERTURB_DEFAULTS:
                raise RandomizationError(f"perturbation {f!r}: not a field; fields: {', '.join(PERTURB_DEFAULTS)}")
            op, names = PERTURB_DEFAULTS[f]
            if isinstance(v, Mapping):
                unknown = set(v) - {"value", "operation", "names"}
                if unknown or "value" not in v:
                    raise RandomizationError(f"perturbation {f!r}: expected a number or {{value, operation, names}}; "
                                             f"got {dict(v)}")
                op, names, v = str(v.get("operation", op)), tuple(v.get("names") or names), v["value"]
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise RandomizationError(f"perturbation {f!r}: value must be a number, got {v!r}") from None
            terms.append(Term.from_dict({"name": f"{f}={x:g}", "field": f, "operation": op, "names": list(names),
                                         "distribution": "uniform", "range": [x, x], "mode": "reset"}))
        return cls(name=name, terms=tuple(terms))

    def __add__(self, other: "Randomization | None") -> "Randomization":
        """Both sets of terms, applied in order (a fixed perturbation on top of a randomization)."""
        if other is None:
            return self
        return Randomization(name=f"{self.name}+{other.name}", terms=self.terms + other.terms)


class Randomizer:
    """Applies a Randomization to one twin (``sim.twin.Twin``): caches the nominal model
    values at construction; ``startup(rng)`` once, ``reset(rng)`` at every episode start,
    ``step(rng)`` after every control step (interval terms). State terms (joint offsets,
    action delay, observation and image noise) are kept in ``state`` for the env to apply."""

    def __init__(self, twin, randomization: "Randomization | str | Path | Mapping[str, Any]"):
        self.twin = twin
        self.randomization = Randomization.load(randomization)
        m = twin.model
        self._index: dict[Term, np.ndarray] = {}
        self._nominal: dict[str, np.ndarray] = {}
        for t in self.randomization.terms:
            if t.field in MODEL_FIELDS:
                kind, attr, _ = MODEL_FIELDS[t.field]
                self._index[t] = self._select(kind, t)
                self._nominal.setdefault(attr, getattr(m, attr).copy())
                if t.field == "body_mass":
                    self._nominal.setdefault("body_inertia", m.body_inertia.copy())
                if t.field == "actuator_kp":
                    self._nominal.setdefault("actuator_biasprm", m.actuator_biasprm.copy())
            elif t.field in TEXTURE_FIELDS:
                self._index[t] = self._select("texture", t)
                self._nominal.setdefault("tex_data", m.tex_data.copy())
            elif t.field == "joint_offset":
                self._index[t] = self._select("joint", t)
        self.state: dict[str, Any] = {"joint_offset": np.zeros(len(twin.spec.joint_names)), "action_delay": 0,
                                      "obs_delay": 0, "obs_noise": 0.0, "image_noise": 0.0}
        self._obs_buffer: deque = deque()  # the observations of the last obs_delay steps
        self.values: dict[str, np.ndarray] = {}  # the last draw of each term (for logs and tests)
        self._steps = 0

    # -- element selection ------------------------------------------------------------
    def _names(self, kind: str) -> list[str]:
        m = self.twin.model
        if kind == "joint":
            return list(self.twin.spec.joint_names)
        if kind == "dof":
            return [m.joint(int(m.dof_jntid[i])).name for i in range(m.nv)]
        getter, n = {"geom": (m.geom, m.ngeom), "body": (m.body, m.nbody), "actuator": (m.actuator, m.nu),
                     "light": (m.light, m.nlight), "camera": (m.camera, m.ncam),
                     "texture": (m.texture, m.ntex)}[kind]
        return [getter(i).name for i in range(n)]

    def _select(self, kind: str, t: Term) -> np.ndarray:
        names = self._names(kind)
        if not t.names:
            return np.arange(len(names))
        arm = set(self.twin.spec.joint_names)
        objects = {self.twin.model.body(b).name for b in getattr(self.twin, "_free_bodies", [])}
        sel = []
        for i, n in enumerate(names):
            for pat in t.names:
                if (pat == "arm" and n in arm) or (pat == "objects" and (n in objects or self._in_objects(kind, i, objects))) \
                        or (pat == "robot" and self._in_robot(kind, i)) or re.fullmatch(pat, n or ""):
                    sel.append(i)
                    break
        if not sel and not set(t.names) <= set(GROUPS):  # a group may be empty (reach: no objects)
            raise RandomizationError(f"term {t.name!r}: names {list(t.names)} match no {kind} of this model "
                                     f"(it has {[n for n in names if n][:20]})")
        return np.asarray(sel, dtype=np.int64)

    def _in_robot(self, kind: str, i: int) -> bool:
        """A body (or a geom of a body) of the robot: the subtree mounted at its ``base``."""
        if kind not in ("geom", "body"):
            return False
        m = self.twin.model
        b = int(m.geom_bodyid[i]) if kind == "geom" else i
        return b > 0 and int(m.body_rootid[b]) == m.body("base").id

    def _in_objects(self, kind: str, i: int, objects: set[str]) -> bool:
        if kind != "geom":
            return False
        m = self.twin.model
        return m.body(int(m.geom_bodyid[i])).name in objects

    # -- applying ---------------------------------------------------------------------
    def startup(self, rng: np.random.Generator) -> None:
        self._apply(rng, "startup")

    def reset(self, rng: np.random.Generator) -> None:
        self._steps = 0
        self._obs_buffer.clear()
        self._apply(rng, "reset")

    def step(self, rng: np.random.Generator) -> None:
        self._steps += 1
        due = [t for t in self.randomization.terms if t.mode == "interval" and self._steps % t.interval_steps == 0]
        if due:
            self._apply(rng, "interval", due)

    def _apply(self, rng: np.random.Generator, mode: str, terms: Sequence[Term] | None = None) -> None:
        for t in terms if terms is not None else [t for t in self.randomization.terms if t.mode == mode]:
            idx = self._index.get(t)
            if t.field in MODEL_FIELDS:
                self._apply_model(t, idx, rng)
            elif t.field in TEXTURE_FIELDS:
                self._apply_texture(t, idx, rng)
            elif t.field == "joint_offset":
                v = t.sample(rng, len(idx))
                off = np.zeros(len(self.twin.spec.joint_names))
                off[idx] = v if t.operation != "scale" else 0.0
                self.state["joint_offset"] = off
                self.values[t.name] = v
            else:
                v = float(t.sample(rng, 1)[0])
                self.state[t.field] = max(0, int(round(v))) if t.field in ("action_delay", "obs_delay") else max(0.0, v)
                self.values[t.name] = np.array([v])
        fields_ = {t.field for t in self.randomization.terms}
        if "action_delay" in fields_:
            self.twin.params = _with(self.twin.params, action_latency_steps=int(self.state["action_delay"]))
        if "obs_noise" in fields_:
            self.twin.params = _with(self.twin.params, obs_noise_std=float(self.state["obs_noise"]))

    def _apply_model(self, t: Term, idx: np.ndarray, rng: np.random.Generator) -> None:
        kind, attr, cols = MODEL_FIELDS[t.field]
        m = self.twin.model
        arr = getattr(m, attr)
        nom = self._nominal[attr]
        cols_ = cols if cols is not None or arr.ndim == 1 else list(range(arr.shape[1]))
        base = nom[idx] if arr.ndim == 1 else nom[np.ix_(idx, cols_)]
        if t.field in PER_COLUMN:
            val = t.sample(rng, base.size).reshape(base.shape)
        else:
            val = t.sample(rng, len(idx)).reshape((len(idx),) + (1,) * (base.ndim - 1))
        self.values[t.name] = val.reshape(-1)
        new = base + val if t.operation == "add" else base * val if t.operation == "scale" else np.broadcast_to(val, base.shape)
        lo_hi = PHYSICAL_BOUNDS.get(t.field)
        if lo_hi is not None:  # a gaussian or an add must not make a mass or a damping negative
            new = np.clip(new, *lo_hi)
        if arr.ndim == 1:
            arr[idx] = new
        else:
            arr[np.ix_(idx, cols_)] = new
        if t.field == "body_mass":  # inertia follows the mass
            ratio = np.where(nom[idx] > 0, m.body_mass[idx] / np.where(nom[idx] > 0, nom[idx], 1), 1.0)
            m.body_inertia[idx] = self._nominal["body_inertia"][idx] * ratio[:, None]
        if t.field == "actuator_kp":  # a position servo: biasprm[1] = -kp
            m.actuator_biasprm[idx, 1] = -m.actuator_gainprm[idx, 0]

    def _apply_texture(self, t: Term, idx: np.ndarray, rng: np.random.Generator) -> None:
        """Texels of the selected textures (RGB, alpha kept) from their nominal values; the
        twin's renderers upload the new pixels before their next frame."""
        m = self.twin.model
        nom = self._nominal["tex_data"]
        drawn = []
        for i in idx:
            adr, nch = int(m.tex_adr[i]), int(m.tex_nchannel[i])
            n = int(m.tex_width[i]) * int(m.tex_height[i]) * nch
            base = nom[adr:adr + n].reshape(-1, nch)[:, :3].astype(np.float64) / 255.0
            val = t.sample(rng, base.size).reshape(base.shape)
            new = base + val if t.operation == "add" else base * val if t.operation == "scale" else val
            px = m.tex_data[adr:adr + n].reshape(-1, nch)
            px[:, :3] = np.round(np.clip(new, 0.0, 1.0) * 255.0).astype(np.uint8)
            drawn.append(val.reshape(-1))
        self.values[t.name] = np.concatenate(drawn) if drawn else np.zeros(0)
        self.twin.texture_version = getattr(self.twin, "texture_version", 0) + 1

    # -- what the env applies to observations ----------------------------------------------
    def noisy_image(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`img` with this episode's camera noise (gaussian, sd in grey levels), if any."""
        sd = self.state["image_noise"]
        if sd <= 0:
            return img
        return np.clip(img.astype(np.float32) + rng.normal(0, sd, img.shape), 0, 255).astype(np.uint8)

    def observe(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        off = self.state["joint_offset"]
        if np.any(off):
            q = obs["joint_pos"].astype(np.float64) + off
            obs["joint_pos"] = q.astype(np.float32)
            pos, mat = self.twin.fk(q)  # the pose a controller computes from its (biased) encoders
            obs["ee_pos"] = pos.astype(np.float32)
            obs["ee_quat"] = mat_to_quat(mat).astype(np.float32)
        for k, v in obs.items():
            if k.startswith("image_"):
                obs[k] = self.noisy_image(v, rng)
        k = int(self.state["obs_delay"])
        if k > 0:  # sensing latency: the policy sees the world as it was k control steps ago
            self._obs_buffer.append(obs)
            while len(self._obs_buffer) > k + 1:
                self._obs_buffer.popleft()
            obs = dict(self._obs_buffer[0])  # the episode's first observation until k steps have passed
        return obs


def _with(params, **kw):
    import dataclasses
    return dataclasses.replace(params, **kw)


def available() -> list[str]:
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


# fitted dynamics (calibration/sysid.py) -> the randomization field each parameter maps to
SYSID_FIELDS = {"kp": ("actuator_kp", ["arm"]), "kv": ("actuator_kv", ["arm"]), "damping": ("joint_damping", ["arm"]),
                "armature": ("joint_armature", ["arm"]), "frictionloss": ("joint_frictionloss", ["arm"]),
                "forcerange": ("actuator_forcerange", ["arm"]), "mass": ("body_mass", ["link[0-9]+", "hand"]),
                "payload": ("body_mass", ["hand"])}


def centred_on_fit(dynamics, base: "str | Path | Mapping[str, Any] | Randomization | None" = "wide",
                   widen: float = 2.0, min_rel: float = 0.05, unidentified: tuple[float, float] = (0.5, 2.0)
                   ) -> dict[str, Any]:
    """A randomization (as a mapping, ready to save as YAML) for a calibrated twin
    (``robot=... calibration=DIR``): every fitted parameter is drawn around the fit -- the
    twin's nominal values already are the fit, so scales around 1 -- with a half-width of
    `widen` x its 95% interval's (at least `min_rel`); a parameter the data could not
    identify is drawn over `unidentified` (x nominal); the fitted action delay +-1 step. The
    terms of `base` that touch none of those fields (objects, light, colours, cameras,
    noise) are kept, so one file covers what system identification does not see."""
    from robot_rl.calibration.sysid import load_dynamics
    dyn = dynamics if hasattr(dynamics, "params") else load_dynamics(dynamics)
    terms: list[dict[str, Any]] = []
    covered = set()
    for name, p in dyn.params.items():
        if name not in SYSID_FIELDS:
            continue
        field_, names = SYSID_FIELDS[name]
        covered.add(field_)
        lo, hi = p.interval
        why = ""
        if not p.identifiable or not (np.isfinite(lo) and np.isfinite(hi)):
            rng_ = list(unidentified)
            why = f"not identified ({p.reason or 'no interval'}): wide"
            dist = "log_uniform"
        elif p.kind == "abs":  # frictionloss, payload: added around the fitted value
            half = max(widen * (hi - lo) / 2, min_rel * abs(p.value), 1e-3)
            rng_, dist = [-half, half], "uniform"
        else:
            half = max(widen * (hi - lo) / 2 / max(abs(p.value), 1e-9), min_rel)
            rng_, dist = [max(1e-3, 1 - half), 1 + half], "uniform"
        op = "add" if (p.kind == "abs" and p.identifiable and dist == "uniform") else "scale"
        term = {"name": f"fit_{name}", "field": field_, "names": names, "operation": op,
                "distribution": dist, "range": [float(x) for x in rng_], "mode": "reset"}
        if why:
            term["name"] = f"unidentified_{name}"
        terms.append(term)
    d = int(dyn.delay_steps)
    terms.append({"name": "fit_action_delay", "field": "action_delay", "operation": "abs", "distribution": "uniform",
                  "range": [max(-0.49, d - 1.49), d + 1.49], "mode": "reset"})
    covered.add("action_delay")
    kept = []
    if base is not None:
        for t in Randomization.load(base).terms:
            if t.field in covered:
                continue
            kept.append({"name": t.name, "field": t.field, "names": list(t.names), "operation": t.operation,
                         "distribution": t.distribution, "range": list(t.range), "mode": t.mode,
                         **({"interval_steps": t.interval_steps} if t.mode == "interval" else {})})
    out = {"name": f"{dyn.robot}_{dyn.id or 'fit'}_centred", "terms": terms + kept}
    Randomization.load(out)  # validates
    return out

"""What every ``robot-rl`` command module shares: the user-error type and the hydra
composition of a command's settings. ``cli/main.py`` dispatches to the command modules;
they import from here, never from main, so the imports run one way."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


class CLIError(Exception):
    """A mistake on the command line or in the inputs: printed as one line, exit code 2."""


FILE_GROUPS = ("randomization",)


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose ``robot_rl/conf/<config_name>.yaml`` with hydra overrides; bad keys and
    values become CLIError with the list of valid keys."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise CLIError(f"expected key=value, got {bad[0]!r}")
    # config groups that also take a file path (randomization=my_terms.yaml): hydra knows only
    # the group's own files, so a path is set after composing
    files = {}
    for o in list(overrides):
        k, _, v = o.partition("=")
        if k in FILE_GROUPS and (v.endswith((".yaml", ".yml")) or "/" in v):
            files[k] = v
            overrides = [x for x in overrides if x != o]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="robot_rl.conf", version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        if files:
            from omegaconf import open_dict
            with open_dict(cfg):
                for k, v in files.items():
                    if f"{k}=<{k} config>" not in known_keys(config_name):
                        raise CLIError(f"unknown setting {k!r} for '{config_name}'")
                    cfg[k] = v
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).strip().splitlines()[0]
        cause = e.__cause__
        text = f"{msg} {cause}" if cause else msg
        if "not in struct" in text or "Could not override" in text:
            key = text.split("'")[1] if "'" in text else "?"
            known = ", ".join(known_keys(config_name))
            raise CLIError(f"unknown setting {key!r} for '{config_name}'; valid settings: {known}") from None
        if "Could not find" in text or "Could not load" in text:
            import re
            from robot_rl.spec import available_robots
            m = re.search(r"'randomization/([^']+)'", text)
            if m:
                from robot_rl.sim.randomization import available
                raise CLIError(f"no randomization {m.group(1)!r}: not one of {available()} (or pass a YAML file "
                               "path)") from None
            m = re.search(r"'robot/([^']+)'", text)
            if m:
                name = m.group(1)
                raise CLIError(f"unknown robot {name!r}; available: {', '.join(available_robots())}") from None
            raise CLIError(msg) from None
        raise CLIError(f"bad settings for '{config_name}': {msg}") from None
    return cfg


def known_keys(config_name: str) -> list[str]:
    from pathlib import Path
    import yaml
    p = Path(__file__).resolve().parent.parent / "conf" / f"{config_name}.yaml"
    d = yaml.safe_load(p.read_text()) or {}
    keys = [k for k in d if k != "defaults"]
    for item in d.get("defaults", []):
        if isinstance(item, dict):
            keys.extend(f"{k}=<{k} config>" for k in item)
    return keys


def path_arg(args: list[str], cmd: str) -> tuple[str, list[str]]:
    if not args or "=" in args[0]:
        raise CLIError(f"'{cmd}' needs a store path: robot-rl {cmd} PATH [key=value ...]")
    return args[0], args[1:]


def cfg_to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

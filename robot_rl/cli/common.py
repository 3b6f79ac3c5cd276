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


# -- help ------------------------------------------------------------------------------------------
# A command's help is read from where its settings are defined: the usage lines and the
# description from the command module's docstring, the settings of a hydra command from its
# config file (key, default and the YAML comment beside it). Nothing here imports the command.

HELP_FLAGS = ("-h", "--help")
CONF_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "conf"


def module_doc(module: str) -> str | None:
    """The docstring of ``module`` read from its source, without importing it (a command's
    help must not load torch, the twin or ROS). None when the module is not installed."""
    import ast
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    from pathlib import Path
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""


def _plain(text: str) -> str:
    """reStructuredText markup a terminal does not need: ``x`` -> x, :mod:`x` -> x, a:: -> a:."""
    import re
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    text = text.replace("``", "")
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M).replace("\n::\n", "\n")


def doc_usage(doc: str, prefix: str) -> tuple[list[str], str]:
    """``(usage, description)`` from a command module's docstring. Usage entries are its
    indented ``robot-rl ...`` lines (with their continuation lines), else the docstring's
    leading ````robot-rl ...````: title; those starting with ``prefix`` (``"robot-rl sysid
    fit"``). The description is the rest of the docstring, other commands' usage lines left out."""
    import re
    lines = doc.splitlines()
    usage: list[str] = []
    lead: list[str] = []  # a title like ``robot-rl info PATH``: the usage when there are no usage lines
    desc: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        m = re.match(r"``(robot-rl [^`]+)``\s*[:.]?\s*(.*)$", s) if i == 0 else None
        if m:
            if _matches(m.group(1), prefix):
                lead.append(m.group(1).strip())
            i += 1
            if m.group(2):  # the title's sentence, with the lines that continue it, as one paragraph
                para = [m.group(2)[0].upper() + m.group(2)[1:]]
                while i < len(lines) and lines[i].strip() and not lines[i].startswith(" "):
                    para.append(lines[i].strip())
                    i += 1
                import textwrap
                desc.extend(textwrap.wrap(" ".join(para), width=92))
            continue
        indent = len(line) - len(line.lstrip())
        if indent and s.startswith("robot-rl "):
            block = [s]
            i += 1
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent \
                    and not lines[i].strip().startswith("robot-rl "):
                block.append(lines[i][indent:].rstrip())
                i += 1
            if _matches(s, prefix):
                usage.append("\n".join(block))
            continue
        desc.append(line)
        i += 1
    text = _plain("\n".join(desc))
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return usage or lead, text


def _matches(usage: str, prefix: str) -> bool:
    return usage == prefix or usage.startswith(prefix + " ")


def usage_lines(doc: str | None, prefix: str) -> str:
    """The docstring's usage lines for ``prefix`` as one text block (for error messages)."""
    return "\n".join(doc_usage(doc or "", prefix)[0])


def format_help(usage: list[str], description: str, settings: str = "") -> str:
    """``usage: ...`` (further forms aligned under the first), the description, the settings."""
    out = []
    for n, u in enumerate(usage):
        head = "usage: " if n == 0 else "       "
        out.append(head + u.replace("\n", "\n       "))
    parts = ["\n".join(out)] if out else []
    if description:
        parts.append(description)
    if settings:
        parts.append(settings)
    return "\n\n".join(parts) + "\n"


def _split_comment(line: str) -> tuple[str, str | None]:
    """A YAML line -> (code, comment or None): a ``#`` outside quotes that starts the line or
    follows whitespace begins the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), None


def group_choices(group: str) -> list[str]:
    """The configs of a hydra config group: the YAML files in ``robot_rl/conf/<group>/``."""
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def config_settings(config_name: str) -> list[tuple[str, str, list[str]]]:
    """``(key, default, comment lines)`` for each setting of ``robot_rl/conf/<config_name>.yaml``
    in file order, read from the YAML text so that the comments come along: config groups
    of the defaults list (their choices first in the comment), nested mappings as dotted
    keys (``sac.batch_size``), a mapping's own comment under ``<key>.*``."""
    text = (CONF_DIR / f"{config_name}.yaml").read_text(encoding="utf-8")
    rows: list[tuple[str, str, list[str]]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings we are inside
    last: list[str] | None = None  # the comment lines of the latest setting (continuations go there)
    for raw in text.splitlines():
        code, comment = _split_comment(raw)
        if not code.strip():
            if comment is not None and last is not None:
                last.append(comment)
            elif comment is None:
                last = None
            continue
        indent = len(code) - len(code.lstrip())
        s = code.strip()
        last = None
        if s.startswith("- "):  # a defaults-list entry: "- group: default"
            key, sep, val = s[2:].partition(":")
            if not sep:
                continue  # _self_
            key = key.strip()
            choices = group_choices(key)
            notes = ([f"choices: {' | '.join(choices)}" + (" | a YAML file" if key in FILE_GROUPS else "")]
                     if choices else [])
            rows.append((key, val.strip(), notes + ([comment] if comment else [])))
            last = rows[-1][2]
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, _, val = s.partition(":")
        key = key.strip()
        if key == "defaults" and not stack:
            stack.append((indent, "<defaults>"))
            continue
        full = ".".join([k for _, k in stack] + [key])
        if not val.strip():  # a mapping: its keys follow, indented
            stack.append((indent, key))
            if comment:
                rows.append((f"{full}.*", "", [comment]))
                last = rows[-1][2]
            continue
        rows.append((full, val.strip(), [comment] if comment else []))
        last = rows[-1][2]
    return rows


def render_settings(config_name: str, width: int = 30) -> str:
    """A hydra command's settings as help text: ``key=default`` and the comments beside it."""
    lines = [f"settings (key=value; defaults and notes from robot_rl/conf/{config_name}.yaml):"]
    for key, default, notes in config_settings(config_name):
        if default == "???":
            default = "<required>"
        left = f"  {key}" + (f"={default}" if default or not key.endswith(".*") else "")
        if not notes:
            lines.append(left)
            continue
        pad = " " * (width + 1)
        if len(left) > width:
            lines.append(left)
            lines.extend(pad + n for n in notes)
        else:
            lines.append(left.ljust(width + 1) + notes[0])
            lines.extend(pad + n for n in notes[1:])
    return "\n".join(lines)

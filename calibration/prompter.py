"""Who carries out the calibration procedures' instructions: a person at the arm.

A procedure says what it needs as an *action* (the virtual person's vocabulary, see
``robot_rl.drivers.virtual.so101``) plus a sentence for a human::

    prompter.ask("pose", "Move the arm to the zero pose ...", arm="follower", pose="zero")
    task = prompter.start("sweep", "Move every joint through its whole range ...", arm="follower")
    while not task.done(): read positions ...
    task.wait()

- :class:`Prompter` (stdin): prints the sentence and waits for Enter (LeRobot's way).
  ``start`` returns at once; ``done()`` turns true when Enter is pressed.
- :class:`PersonPrompter` (``person=URL``): posts ``{"do": action, ...}`` to the virtual
  person's ``/person`` endpoint, which answers when the action is done. ``start`` posts
  from a thread; ``done()`` turns true when the answer arrives.

Both print the sentence to ``out`` (stdout by default), so a log reads the same either way.
"""
from __future__ import annotations

import select
import sys
import threading
from typing import IO, Any, Callable


class PromptError(RuntimeError):
    """The person could not do what was asked (the virtual person answered an error, or
    could not be reached)."""


class Task:
    """An action in progress (``Prompter.start``)."""

    def __init__(self, done: Callable[[], bool], wait: Callable[[float | None], None]):
        self._done, self._wait = done, wait

    def done(self) -> bool:
        return self._done()

    def wait(self, timeout: float | None = None) -> None:
        self._wait(timeout)


class Prompter:
    """A person at the keyboard: instructions on ``out``, "press Enter" on ``inp``."""

    def __init__(self, out: IO[str] | None = None, inp: IO[str] | None = None):
        self.out = out or sys.stdout
        self.inp = inp or sys.stdin

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tell(self, action: str, text: str, **params: Any) -> None:
        """Tell the person something that needs no confirmation (e.g. "you can let go")."""
        self.say(text)

    def ask(self, action: str, text: str, **params: Any) -> None:
        """Tell the person what to do; return when they confirm (Enter)."""
        self.say(f"{text} Press Enter when done.")
        line = self.inp.readline()
        if line == "":
            raise PromptError(f"stdin closed while waiting for: {text!r} (run interactively, or pass person=URL)")

    def start(self, action: str, text: str, **params: Any) -> Task:
        """Tell the person what to do; return at once. ``done()`` becomes true on Enter."""
        self.say(f"{text} Press Enter when done.")
        state = {"done": False}
        inp = self.inp

        def done() -> bool:
            if state["done"]:
                return True
            try:
                ready, _, _ = select.select([inp], [], [], 0)
            except (ValueError, OSError, TypeError):  # not a real file (e.g. StringIO): a line is there or EOF
                ready = [inp]
            if ready:
                line = inp.readline()
                if line == "":
                    raise PromptError(f"stdin closed while waiting for: {text!r}")
                state["done"] = True
            return state["done"]

        def wait(timeout: float | None = None) -> None:
            while not done():
                select.select([inp], [], [], 0.1 if timeout is None else min(0.1, timeout))

        return Task(done, wait)


class PersonPrompter(Prompter):
    """The virtual person behind ``url`` (``http://127.0.0.1:PORT`` as ``robot-rl virtual
    so101`` prints it; ``/person`` is appended unless the URL ends with it)."""

    def __init__(self, url: str, out: IO[str] | None = None, timeout_s: float = 300.0, quiet: bool = False):
        from robot_rl.drivers.virtual.person import person_urls
        super().__init__(out=out)
        self.url = person_urls(url)[0]
        self.timeout_s = timeout_s
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            super().say(text)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        from robot_rl.drivers.virtual.person import PersonError, post
        try:
            return post(self.url, body, timeout=self.timeout_s)
        except PersonError as e:
            msg = str(e)
            raise PromptError(msg if msg.startswith("cannot reach") else
                              f"the person at {self.url} could not do {body}: {msg}") from None

    def tell(self, action: str, text: str, **params: Any) -> None:
        self.ask(action, text, **params)

    def ask(self, action: str, text: str, **params: Any) -> dict[str, Any]:
        self.say(f"{text} [person: {action}]")
        if action == "plug_all":  # the person plugs one cable at a time
            motors = params.pop("motors")
            return {m: self._post({"do": "plug", "motor": m, "only": False, **params}) for m in motors}
        return self._post({"do": action, **{k: v for k, v in params.items() if v is not None}})

    def start(self, action: str, text: str, **params: Any) -> Task:
        self.say(f"{text} [person: {action}]")
        result: dict[str, Any] = {}
        body = {"do": action, **{k: v for k, v in params.items() if v is not None}}

        def run() -> None:
            try:
                result["reply"] = self._post(body)
            except BaseException as e:  # noqa: BLE001 - handed to the caller in done()/wait()
                result["error"] = e

        t = threading.Thread(target=run, name=f"person-{action}", daemon=True)
        t.start()

        def done() -> bool:
            if t.is_alive():
                return False
            if "error" in result:
                raise result["error"]
            return True

        def wait(timeout: float | None = None) -> None:
            t.join(timeout)
            done()

        return Task(done, wait)


def make_prompter(person: str | None = None, out: IO[str] | None = None) -> Prompter:
    """``person=URL`` -> the virtual person; otherwise a human at stdin."""
    return PersonPrompter(person, out=out) if person else Prompter(out=out)

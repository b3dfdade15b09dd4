"""METEOR 1.5 through the official jar, as pycocoevalcap's meteor.py runs it.

METEOR (exact, stem, synonym and paraphrase matches, fragmentation penalty) has no
exact re-implementation: its paraphrase tables and its scoring live in the jar, so
the numbers comparable with published results come from running it. Like
pycocoevalcap, this starts `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`,
asks it for each image's statistics ("SCORE ||| ref ||| ... ||| candidate") and then
for the score of all of them at once ("EVAL ||| stats ||| ..."), whose last line is
the corpus METEOR. Unlike pycocoevalcap there is one Java process per evaluation
(not one per scorer object, kept alive and shared behind a lock), it is fed by a
writer thread while the answers are read (no deadlock on full pipes, no round trip
per image), its stderr goes to a file (a chatty JVM cannot block it), and it is
always shut down.

The jar is pycocoevalcap's (found with importlib, nothing imported) or the file
$CVTRAIN_METEOR_JAR names. NLTK's `meteor_score` is a different METEOR (no
paraphrases, other parameters) and needs the WordNet data downloaded, so it is not
offered: its numbers would not be comparable.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Hashable, Mapping
from pathlib import Path

from cvtrain.errors import UserError
from cvtrain.metrics.captioning.ngrams import check_pairs

JAR_ENV = "CVTRAIN_METEOR_JAR"
JAR_NAME = "meteor-1.5.jar"


def jar_path() -> Path | None:
    """$CVTRAIN_METEOR_JAR, else the jar inside the installed pycocoevalcap, else None."""
    if os.environ.get(JAR_ENV):
        return Path(os.environ[JAR_ENV])
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(list(spec.submodule_search_locations)[0]) / "meteor" / JAR_NAME
    return jar if jar.is_file() else None


def available() -> tuple[bool, str]:
    """Whether METEOR can run here, and if not, why (one line, with the fix)."""
    if shutil.which("java") is None:
        return False, "no Java runtime found (install a JRE, e.g. apt-get install default-jre-headless)"
    jar = jar_path()
    if jar is None:
        return False, f"{JAR_NAME} not found (pip install pycocoevalcap, or set ${JAR_ENV} to the jar)"
    if not jar.is_file():
        return False, f"${JAR_ENV} names '{jar}', which is not a file"
    return True, ""


def compute_meteor(gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]]) -> tuple[float, list[float]]:
    """(corpus METEOR, per-image METEOR), like pycocoevalcap's `Meteor().compute_score(gts, res)`."""
    check_pairs(gts, res)
    ok, why = available()
    if not ok:
        raise UserError(f"METEOR cannot run: {why}.")
    keys = list(gts)
    score_lines = [_score_line(res[key][0], gts[key]) for key in keys]
    with _MeteorProcess(jar_path()) as meteor:
        stats = meteor.ask(score_lines, len(score_lines))
        answers = meteor.ask(["EVAL ||| " + " ||| ".join(stats)], len(keys) + 1)
    return float(answers[-1]), [float(a) for a in answers[:-1]]


def _score_line(candidate: str, refs: list[str]) -> str:
    """The jar's request for one image's statistics (pycocoevalcap's `_stat`, verbatim)."""
    candidate = candidate.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(refs), candidate))


class _MeteorProcess:
    """The METEOR jar in -stdio mode, for the length of a `with` block."""

    def __init__(self, jar: Path):
        self.jar = jar

    def __enter__(self) -> _MeteorProcess:
        self.stderr = tempfile.TemporaryFile()
        cmd = ["java", "-jar", "-Xmx2G", self.jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
        self.proc = subprocess.Popen(
            cmd, cwd=self.jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr
        )
        return self

    def ask(self, lines: list[str], answers: int) -> list[str]:
        """Send `lines` (from a thread) and read `answers` reply lines."""
        failed: list[BaseException] = []

        def write() -> None:
            try:
                for line in lines:
                    self.proc.stdin.write(f"{line}\n".encode())
                self.proc.stdin.flush()
            except BaseException as error:  # noqa: BLE001  (reported by the reader below)
                failed.append(error)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        replies = []
        for _ in range(answers):
            reply = self.proc.stdout.readline()
            if not reply:
                break
            replies.append(reply.decode().strip())
        writer.join()
        if len(replies) < answers or failed:
            why = " ".join(self._error_tail().split())
            raise UserError(f"the METEOR jar stopped answering ({why}); skip METEOR with --no-meteor (meteor=False).")
        return replies

    def _error_tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text[-300:] or f"exit status {self.proc.poll()}"

    def __exit__(self, *exc) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()

"""The folder the workers of one `serve --workers N` share: the last reload asked for,
and the answers counted are those of that reload."""

import subprocess
import sys
from pathlib import Path

from ridematch_nb.model.replicas import Replicas, Wanted


def answer_from_another_process(folder: Path, token: str, served: str) -> None:
    code = (
        "import sys; from pathlib import Path; from ridematch_nb.model.replicas import Replicas;"
        "Replicas(Path(sys.argv[1]), 2).answer(sys.argv[2], sys.argv[3])"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), token, served], check=True)


def test_each_reload_has_a_token_of_its_own_and_the_last_one_is_wanted(tmp_path):
    asking, other = Replicas(tmp_path, 2), Replicas(tmp_path, 2)
    assert other.wanted() is None
    token = asking.want(Path("/runs/b"))
    assert other.wanted() == Wanted(token, Path("/runs/b"))
    second = asking.want(Path("/runs/c"))  # within the same clock tick as the first
    assert second != token and other.wanted() == Wanted(second, Path("/runs/c"))
    assert not list(tmp_path.glob(".*"))  # no half-written file left behind


def test_the_answers_of_one_reload_and_the_wait_for_all(tmp_path):
    replicas = Replicas(tmp_path, 2)
    old, new = replicas.want(Path("/runs/a")), replicas.want(Path("/runs/b"))
    answer_from_another_process(tmp_path, old, "a")
    replicas.answer(new, "b")
    assert list(replicas.answers(new).values()) == [{"token": new, "served": "b", "error": None}]
    assert len(replicas.wait_for_all(new, timeout_s=0.2)) == 1  # the other answered `old`
    answer_from_another_process(tmp_path, new, "b")
    got = replicas.wait_for_all(new, timeout_s=30)
    assert len(got) == 2 and {a["served"] for a in got.values()} == {"b"}


def test_a_worker_that_failed_says_why(tmp_path):
    replicas = Replicas(tmp_path, 1)
    token = replicas.want(Path("/runs/x"))
    replicas.answer(token, None, "ConfigError: no model in /runs/x/model")
    assert replicas.answers(token).popitem()[1]["error"].startswith("ConfigError")

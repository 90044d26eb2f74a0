"""How the command line reports errors: a wrong parameter alone, with exit 2; a bug with
Python's own traceback."""

from __future__ import annotations

import pytest

from ridematch_nb import cli
from ridematch_nb.config import ParameterError


def test_cli_shows_a_wrong_parameter_alone_with_exit_2(capsys):
    assert cli.main(["etl", "--roll-records", "0", "--params", "params/ci.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter roll_records=0") and "Traceback" not in err


def test_cli_lets_an_unexpected_error_say_where_it_happened(monkeypatch):
    def broken(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(cli, "_cmd_check_events", broken)
    with pytest.raises(ValueError, match="a bug"):  # Python prints where; not exit 2
        cli.main(["check-events", "1"])


def test_parameter_errors_are_still_value_errors():
    assert issubclass(ParameterError, ValueError)

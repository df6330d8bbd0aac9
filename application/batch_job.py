"""One `kconvert batch` job in its own process: `python -m application.batch_job RESULT.json < JOB.json`.

The job (application/batch_sources.BatchJob as JSON) is converted, and checked when asked, by the same
service the convert and verify commands use; the outcome is written to RESULT.json. The process caps its
own address space first (RLIMIT_AS, the job's `memory` in MB), so a model too big for the cap fails here,
alone. It imports only what conversion needs: application.service (numpy, h5py, the converter); verify's
modules only for a job with test data. The fork server (application/batch_zygote.py) runs the same
run_job and limit_memory in each child it forks.
"""

from __future__ import annotations

import errno
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from converter.errors import KconvertError, KconvertWarning, exit_code_for

STATUS_BY_EXIT = {0: "pass", 3: "refused", 4: "mismatch"}  # any other KconvertError: "error"


def limit_memory(megabytes: float | None) -> None:
    """Cap this process' address space; numpy then raises MemoryError instead of the machine swapping."""
    if megabytes is None:
        return
    import resource

    cap = int(megabytes * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """The job's outcome: status (pass / mismatch / refused / error / oom), reason, exit code, and the
    conversion's (and verification's) report."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", KconvertWarning)
        try:
            outcome = _convert_and_verify(job)
        except KconvertError as err:
            outcome = {"status": STATUS_BY_EXIT.get(exit_code_for(err), "error"), "exit_code": exit_code_for(err),
                       "reason": f"{type(err).__name__}: {err.render()}"}
        except MemoryError:
            outcome = _out_of_memory(job, "MemoryError")
        except OSError as err:  # mmap of the weights past the address-space cap
            if err.errno != errno.ENOMEM:
                raise
            outcome = _out_of_memory(job, str(err))
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, KconvertWarning)))
    return {**outcome, "seconds": round(time.perf_counter() - start, 3), "warnings": notes}


def _out_of_memory(job: dict[str, Any], what: str) -> dict[str, Any]:
    cap = f"cap {job['memory']:g} MB" if job.get("memory") else "no cap"
    return {"status": "oom", "exit_code": None, "reason": f"out of memory ({cap}): {what}"}


def _convert_and_verify(job: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    from application.batch_sources import request_values
    from application.service import ConvertRequest, convert

    imports = round(time.perf_counter() - start, 3)  # the per-job start-up cost the bench reports

    def path(key: str) -> Path | None:
        return None if job.get(key) is None else Path(job[key])

    options = request_values(job["options"])
    request = ConvertRequest(model=Path(job["model"]), output=Path(job["output"]), weights=path("weights"),
                             reference=path("reference"), **options)
    converted = convert(request)
    report: dict[str, Any] = {"convert": converted.to_dict()}
    failure: KconvertError | None = converted.failure
    test_data = path("test_data")
    if test_data is not None and failure is None:
        from application.verify import VerifyRequest, verify

        verified = verify(VerifyRequest(model=converted.output, test_data=test_data, provider=request.provider))
        report["verify"] = verified.to_dict()
        failure = verified.failure
    code = exit_code_for(failure)
    reason = "" if failure is None else f"{type(failure).__name__}: {failure.render()}"
    return {"status": STATUS_BY_EXIT.get(code, "error"), "exit_code": code, "reason": reason,
            "import_seconds": imports, **report}


def main(argv: list[str]) -> int:
    job = json.loads(sys.stdin.read())
    limit_memory(job.get("memory"))
    result = run_job(job)
    Path(argv[1]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

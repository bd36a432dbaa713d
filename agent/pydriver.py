# Berth's persistent Python interpreter. The agent starts it once per sandbox
# and sends one JSON request per line on fd 3: {"code": "...", "nonce": "..."}.
# Output goes to fd 1 and 2 as the code runs; when a cell is done the driver
# writes "\0berth-NONCE:" + JSON result + "\0" to fd 1 and "\0berth-NONCE:\0"
# to fd 2, so the agent knows every byte before the markers belongs to it.
import ast
import io
import json
import os
import resource
import sys
import traceback

_max_procs = int(os.environ.get("BERTH_MAX_PROCS") or 0)
if _max_procs > 0:
    resource.setrlimit(resource.RLIMIT_NPROC, (_max_procs, _max_procs))

_requests = os.fdopen(3, "r", encoding="utf-8")
sys.stdin = open(os.devnull, "r")
sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), encoding="utf-8",
                              errors="backslashreplace", write_through=True)
sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", 0), encoding="utf-8",
                              errors="backslashreplace", write_through=True)

_globals = {"__name__": "__main__", "__builtins__": __builtins__}


def _encode(value):
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _run(code):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), _globals)
    if last is not None:
        return eval(compile(last, "<cell>", "eval"), _globals)
    return None


def _cell_traceback(exc):
    # Drop the driver's own frames so the user sees only their code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


for line in _requests:
    req = json.loads(line)
    result = {"exitCode": 0}
    try:
        result["value"] = _encode(_run(req["code"]))
    except SystemExit as e:
        code = e.code
        result["exitCode"] = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
    except BaseException as e:  # noqa: BLE001 - report everything, keep serving
        sys.stderr.write(_cell_traceback(e))
        result["exitCode"] = 1
        result["error"] = "%s: %s" % (type(e).__name__, e)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    marker = "\0berth-" + req["nonce"] + ":"
    os.write(1, (marker + json.dumps(result, default=repr) + "\0").encode())
    os.write(2, (marker + "\0").encode())

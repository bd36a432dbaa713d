# Berth's persistent Python interpreter. The agent starts it once per sandbox
# and sends one JSON request per line on fd 3: {"code": "...", "nonce": "..."}.
# Output goes to fd 1 and 2 as the code runs; when a cell is done the driver
# writes "\0berth-NONCE:" + JSON result + "\0" to fd 1 and "\0berth-NONCE:\0"
# to fd 2, so the agent knows every byte before the markers belongs to it.
#
# Figures: when the user's code imports matplotlib.pyplot, the driver patches
# its show() to render the open figures to PNG and attach them to the cell's
# result (as Jupyter's inline backend does, figures still open when the cell
# ends are attached too, and closed). Nothing is imported until the user's
# code imports pyplot itself.
import ast
import base64
import importlib.abc
import importlib.machinery
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

# Bounds on the figures one cell returns; past them a figure is dropped
# with a note on stderr.
_MAX_FIGURES = int(os.environ.get("BERTH_MAX_FIGURES") or 4)
_MAX_FIGURE_BYTES = int(os.environ.get("BERTH_MAX_FIGURE_BYTES") or 2 << 20)
_MAX_FIGURES_TOTAL_BYTES = int(os.environ.get("BERTH_MAX_FIGURES_TOTAL_BYTES") or 4 << 20)
_figure_bytes = 0  # the current cell's PNG bytes so far
_figures = []  # the current cell's images: {"format": "png", "data": base64}
_pyplot = None  # matplotlib.pyplot once the user's code has imported it


def _capture_figures():
    """Renders every open figure to PNG for the current cell and closes it."""
    plt = _pyplot
    if plt is None:
        return
    global _figure_bytes
    from matplotlib._pylab_helpers import Gcf

    for manager in list(Gcf.get_all_fig_managers()):
        fig = manager.canvas.figure
        try:
            if len(_figures) >= _MAX_FIGURES:
                sys.stderr.write("berth: a figure was not returned: at most %d figures per execution; "
                                 "save more with plt.savefig('/mnt/data/NAME.png')\n" % _MAX_FIGURES)
                continue
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            png = buf.getvalue()
            if len(png) > _MAX_FIGURE_BYTES or _figure_bytes + len(png) > _MAX_FIGURES_TOTAL_BYTES:
                sys.stderr.write("berth: a figure was not returned: its PNG is %d bytes, past the limit of %d bytes a figure "
                                 "and %d an execution; lower its size or dpi, or save it with plt.savefig('/mnt/data/NAME.png')\n"
                                 % (len(png), _MAX_FIGURE_BYTES, _MAX_FIGURES_TOTAL_BYTES))
                continue
            _figure_bytes += len(png)
            _figures.append({"format": "png", "data": base64.b64encode(png).decode("ascii")})
        except Exception as e:  # noqa: BLE001 - a broken figure must not break the cell
            sys.stderr.write("berth: a figure could not be rendered: %s: %s\n" % (type(e).__name__, e))
        finally:
            plt.close(fig)


def _patch_pyplot(plt):
    global _pyplot
    _pyplot = plt
    original = plt.show

    def show(*args, **kwargs):
        """Berth: attaches the open figures to the execution's result as PNG images."""
        _capture_figures()

    show.__wrapped__ = original
    plt.show = show


class _PyplotHook(importlib.abc.MetaPathFinder):
    """Patches matplotlib.pyplot.show as the user's code imports pyplot."""

    def find_spec(self, name, path, target=None):
        if name != "matplotlib.pyplot" or _pyplot is not None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch_pyplot(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PyplotHook())

# Debian's matplotlib reads its defaults from /etc/matplotlibrc, which a
# sandbox on the host's /usr (with a /etc of its own) lacks: point it at
# the copy under /usr.
if ("MATPLOTLIBRC" not in os.environ and not os.path.exists("/etc/matplotlibrc")
        and os.path.exists("/usr/share/matplotlib/mpl-data/matplotlibrc")):
    os.environ["MATPLOTLIBRC"] = "/usr/share/matplotlib/mpl-data"

# Berth's Python image ships matplotlib's font list, built with the image:
# seed the sandbox's (writable, empty) MPLCONFIGDIR with it, so the first
# plot does not spend seconds scanning fonts.
# (matplotlib's cache dir: $MPLCONFIGDIR, else $XDG_CACHE_HOME/matplotlib,
# else ~/.cache/matplotlib.)
_MPL_SEED = "/usr/share/berth/matplotlib"
if os.path.isdir(_MPL_SEED):
    _mpl_dir = os.environ.get("MPLCONFIGDIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "matplotlib")
else:
    _mpl_dir = None
if _mpl_dir and not os.path.exists(_mpl_dir):
    try:
        os.makedirs(_mpl_dir, 0o700)
        for _name in os.listdir(_MPL_SEED):
            with open(os.path.join(_MPL_SEED, _name), "rb") as _src, \
                    open(os.path.join(_mpl_dir, _name), "wb") as _dst:
                _dst.write(_src.read())
    except OSError:
        pass  # matplotlib builds the list itself


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
    _figures, _figure_bytes = [], 0
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
        _capture_figures()
    except BaseException as e:  # noqa: BLE001
        sys.stderr.write("berth: figures could not be collected: %s: %s\n" % (type(e).__name__, e))
    if _figures:
        result["images"] = _figures
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    marker = "\0berth-" + req["nonce"] + ":"
    os.write(1, (marker + json.dumps(result, default=repr) + "\0").encode())
    os.write(2, (marker + "\0").encode())

"""``RKNN``: the RKNN-Toolkit2 2.x API, method for method, on rkfarm's open implementation.

A script written for the vendor toolkit runs after changing ``from rknn.api import RKNN`` to
``from rkfarm import RKNN``. Methods return the vendor's codes (0 ok, -1 fail; ``inference`` returns a list of
arrays or None) and log the reason of a failure on the ``rkfarm`` logger. ``RKNN(raise_errors=True)`` (or the
environment variable ``RKFARM_RAISE_ERRORS=1``) raises rkfarm's exceptions instead; ``last_error`` always holds
the most recent one.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from rkfarm import __version__, _log
from rkfarm.config import RknnConfig
from rkfarm.errors import BuildError, NotSupportedError, RkfarmError, StateError
from rkfarm.packages import load_package
from rkfarm.perf import PerfReport, format_memory, memory_dict
from rkfarm.runtime import Array, Runtime
from rkfarm_proto import platforms
from rkfarm_proto.package import FILE_EXTENSION, ModelPackage, read_package, write_package
from rkfarm_proto.records import PERF_RUNS, PERF_WARMUP, LoadOptions, PerfOptions
from rkfarm_proto.vendor_api import vendor_api

if TYPE_CHECKING:
    from rkfarm.analysis import AnalysisResult
    from rkfarm.frontends import LoadedGraph
    from rkfarm.quant import QuantResult
    from rkfarm.quant.auto_hybrid import HybridResult

log = logging.getLogger("rkfarm")

P = ParamSpec("P")
R = TypeVar("R")


def _vendor_api(failure: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The vendor's failure value and a logged reason instead of an exception (``rkfarm_proto.vendor_api``)."""
    return vendor_api(failure, log)


class RKNN:
    """Rockchip-NPU model toolkit, API-compatible with ``rknn.api.RKNN`` (RKNN-Toolkit2 2.x)."""

    NPU_CORE_AUTO = platforms.NPU_CORE_AUTO
    NPU_CORE_0 = platforms.NPU_CORE_0
    NPU_CORE_1 = platforms.NPU_CORE_1
    NPU_CORE_2 = platforms.NPU_CORE_2
    NPU_CORE_0_1 = platforms.NPU_CORE_0_1
    NPU_CORE_0_1_2 = platforms.NPU_CORE_0_1_2
    NPU_CORE_ALL = platforms.NPU_CORE_ALL

    def __init__(
        self, verbose: bool | str = False, verbose_file: str | None = None, *, raise_errors: bool | None = None
    ) -> None:
        if raise_errors is None:
            raise_errors = os.environ.get("RKFARM_RAISE_ERRORS", "").lower() in ("1", "true", "yes")
        self._raise_errors = raise_errors
        self.last_error: BaseException | None = None
        _log.configure(verbose, verbose_file)
        self._config = RknnConfig()
        self._config_error: RkfarmError | None = None
        self._loaded: LoadedGraph | None = None
        self._custom_op_types: list[str] = []
        self._package: ModelPackage | None = None
        self._runtime: Runtime | None = None
        self._perf_debug = False
        self._quant: QuantResult | None = None  # the last int8 build: float model, plan, parameters
        self._analysis: AnalysisResult | None = None
        self._hybrid: HybridResult | None = None

    # -- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> RKNN:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- configuration and loading ---------------------------------------------------------------------
    @_vendor_api(-1)
    def config(self, *args: Any, **kwargs: Any) -> int:
        """Set build options; parameters, their order and defaults are the vendor's (see ``RknnConfig``)."""
        try:
            self._config = RknnConfig.from_call(self._config, args, kwargs)
        except RkfarmError as exc:
            self._config_error = exc  # the vendor raises here; rkfarm refuses to build until config() succeeds
            raise
        self._config_error = None
        chosen = self._config.as_record()
        log.info("config: %s", ", ".join(f"{k}={v}" for k, v in sorted(chosen.items())) or "the defaults")
        return 0

    @_vendor_api(-1)
    def load_onnx(
        self,
        model: str | os.PathLike[str],
        inputs: Sequence[str] | None = None,
        input_size_list: Sequence[Sequence[int]] | None = None,
        input_initial_val: Sequence[npt.ArrayLike | None] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> int:
        """Load an ONNX model, optionally cut at ``inputs``/``outputs`` and with dims fixed. Nodes whose op type was
        registered with ``reg_custom_op()`` run the registered class."""
        from rkfarm.frontends.onnx import load_onnx, read_onnx

        if self._config.dynamic_input is not None:  # the shape sets settle the dynamic dims (rkfarm.dynamic)
            from rkfarm.dynamic import load_onnx_dynamic

            proto, name, digest = read_onnx(model, custom_op_types=self._custom_op_types)
            sets = self._config.dynamic_input
            loaded = load_onnx_dynamic(proto, sets, inputs, input_size_list, input_initial_val, outputs)
            loaded.source_name, loaded.source_sha256 = name, digest
            self._set_loaded(loaded)
            return 0
        if not self._custom_op_types:
            self._set_loaded(load_onnx(model, inputs, input_size_list, input_initial_val, outputs))
            return 0
        proto, name, digest = read_onnx(model, custom_op_types=self._custom_op_types)
        loaded = load_onnx(proto, inputs, input_size_list, input_initial_val, outputs)
        loaded.source_name, loaded.source_sha256 = name, digest
        self._set_loaded(loaded)
        return 0

    @_vendor_api(-1)
    def load_pytorch(self, model: str | os.PathLike[str], input_size_list: Sequence[Sequence[int]]) -> int:
        """Load a TorchScript model (needs torch), exported to ONNX with torch's exporter."""
        return self._load("pytorch", model, input_size_list)

    @_vendor_api(-1)
    def load_tflite(self, model: str | os.PathLike[str], input_is_nchw: bool = False) -> int:
        """Load a TensorFlow Lite model (float or quantized); NHWC inputs stay NHWC unless ``input_is_nchw``."""
        return self._load("tflite", model, input_is_nchw)

    @_vendor_api(-1)
    def load_tensorflow(
        self,
        tf_pb: str | os.PathLike[str],
        inputs: Sequence[str],
        input_size_list: Sequence[Sequence[int]],
        outputs: Sequence[str],
        input_is_nchw: bool = False,
    ) -> int:
        """Load a frozen TensorFlow graph (.pb), cut at ``inputs``/``outputs`` with the given input shapes."""
        return self._load("tensorflow", tf_pb, inputs, input_size_list, outputs, input_is_nchw)

    @_vendor_api(-1)
    def load_caffe(
        self, model: str | os.PathLike[str], blobs: str | os.PathLike[str] | None = None,
        input_name: Sequence[str] | None = None,
    ) -> int:  # fmt: skip
        """Load a Caffe model: the .prototxt and its .caffemodel weights (None: random weights)."""
        return self._load("caffe", model, blobs, input_name)

    @_vendor_api(-1)
    def load_darknet(self, model: str | os.PathLike[str], weight: str | os.PathLike[str]) -> int:
        """Load a Darknet model: the .cfg and its .weights."""
        return self._load("darknet", model, weight)

    def _load(self, framework: str, *args: Any) -> int:
        from rkfarm.frontends import loader

        self._set_loaded(loader(framework)(*args))
        return 0

    def _check_config(self, what: str) -> None:
        """A failed config() must not let a build go on with settings the script did not ask for."""
        if self._config_error is not None:
            raise StateError(f"{what} refused: the last config() call failed ({self._config_error}); fix it first")

    def _set_loaded(self, loaded: LoadedGraph) -> None:
        self._close_runtime()
        self._reset()
        self._loaded = loaded
        if log.isEnabledFor(logging.INFO):
            log.info("%s", _describe_loaded(loaded))

    def _reset(self) -> None:
        """Forget the model and everything made from it (build, analysis and hybrid results)."""
        self._loaded = None
        self._package = None
        self._quant = None
        self._analysis = None
        self._hybrid = None

    # -- build and export ------------------------------------------------------------------------------
    @_vendor_api(-1)
    def build(
        self,
        do_quantization: bool = True,
        dataset: str | None = None,
        rknn_batch_size: int | None = None,
        auto_hybrid: bool = False,
        *,
        compiler: str = "rkfarm",
    ) -> int:
        """Optimize the loaded model and make the package: float16 by default, int8 with a dataset.

        ``compiler='vendor'`` (rkfarm extension): rkfarm calibrates, the vendor's RKNN-Toolkit2 (its side
        environment) compiles a ``.rknn`` for the NPU with rkfarm's ranges, wrapped in the package
        (``rkfarm.vendor.bridge``).

        ``auto_hybrid=True`` keeps the fewest layers in float for the output to reach
        ``config(auto_hybrid_cos_thresh=..., auto_hybrid_euc_thresh=...)`` (see ``rkfarm.quant.auto_hybrid``);
        ``hybrid_result`` then tells which layers and the cosine before and after."""
        from rkfarm.build import build_package
        from rkfarm.quant import QuantBuild

        self._check_config("build()")
        if self._loaded is None:
            raise StateError("build() needs a model: call load_onnx() (or another load_*) first")
        if compiler != "rkfarm":  # rkfarm's calibration, another compiler
            from rkfarm.vendor import build_for

            self._close_runtime()
            self._quant = self._hybrid = None
            vendor = build_for(
                compiler, self._loaded, self._config, do_quantization, dataset, rknn_batch_size, auto_hybrid
            )
            self._package = vendor.package
            return 0
        search = None
        if auto_hybrid:
            if not do_quantization:
                raise BuildError(
                    "build(auto_hybrid=True) keeps layers of an int8 model in float: it needs do_quantization=True "
                    "and a dataset"
                )
            from rkfarm.quant.auto_hybrid import SearchOptions

            search = SearchOptions.from_config(self._config)
        if self._config.target_platform is None:
            log.info("build: config() named no target_platform (the vendor requires one); the package runs anywhere")
        self._close_runtime()
        self._quant = self._hybrid = None
        hook = QuantBuild(search=search)
        self._package = build_package(
            self._loaded, self._config, do_quantization, dataset, rknn_batch_size, quantizer=hook
        )
        self._quant = hook.result
        self._hybrid = hook.result.hybrid if hook.result else None
        return 0

    # -- hybrid quantization and accuracy analysis ------------------------------------------------------
    @_vendor_api(-1)
    def hybrid_quantization_step1(
        self,
        dataset: str = "dataset.txt",
        rknn_batch_size: int | None = None,
        proposal: bool = False,
        proposal_dataset_size: int = 1,
        custom_hybrid: Sequence[Sequence[str]] | None = None,
        *,
        output_dir: str | os.PathLike[str] = ".",
    ) -> int:
        """Calibrate and write ``{name}.model``, ``{name}.data`` and ``{name}.quantization.cfg`` (in the current
        folder, like the vendor; ``output_dir`` is an rkfarm extension). Edit ``custom_quantize_layers`` in the
        cfg (``tensor: float16``) or its ranges, then call hybrid_quantization_step2() — in this object or a
        fresh one. ``proposal=True`` fills custom_quantize_layers with what auto_hybrid would keep in float,
        measured on ``proposal_dataset_size`` samples; ``custom_hybrid=[[input, output], ...]`` keeps those
        subgraphs in float."""
        from rkfarm.build import build_package
        from rkfarm.quant import QuantBuild
        from rkfarm.quant.hybrid_files import write_step1

        self._check_config("hybrid_quantization_step1()")
        if self._loaded is None:
            raise StateError("hybrid_quantization_step1() needs a model: call load_onnx() first")
        search = None
        if proposal:
            if not isinstance(proposal_dataset_size, int) or proposal_dataset_size < 1:
                raise BuildError(f"proposal_dataset_size must be a positive int, got {proposal_dataset_size!r}")
            from rkfarm.quant.auto_hybrid import SearchOptions

            search = SearchOptions.from_config(self._config, samples=proposal_dataset_size)
        hook = QuantBuild(custom_hybrid=list(custom_hybrid or ()), search=search)
        build_package(self._loaded, self._config, True, dataset, rknn_batch_size, quantizer=hook)
        assert hook.result is not None
        self._hybrid = hook.result.hybrid
        write_step1(hook.result, self._loaded, self._config, Path(output_dir))
        return 0

    @_vendor_api(-1)
    def hybrid_quantization_step2(
        self,
        model_input: str | os.PathLike[str],
        data_input: str | os.PathLike[str],
        model_quantization_cfg: str | os.PathLike[str],
    ) -> int:
        """Build the int8 model from step 1's files and the (edited) cfg: listed layers in float, edited ranges
        honoured. Needs nothing else from step 1: the config travels in the .model."""
        from rkfarm.build import package_model
        from rkfarm.quant.hybrid_files import load_step2
        from rkfarm.specs import input_specs

        self._close_runtime()
        loaded, cfg, result = load_step2(model_input, data_input, model_quantization_cfg)
        specs = input_specs(result.calibration.model, cfg)
        self._package = package_model(result.model, loaded, cfg, specs, result.summary)
        self._config, self._loaded, self._quant = cfg, loaded, result
        return 0

    @_vendor_api(-1)
    def accuracy_analysis(
        self,
        inputs: Sequence[str | os.PathLike[str]] | str,
        output_dir: str | os.PathLike[str] | None = "./snapshot",
        target: str | None = None,
        device_id: str | None = None,
    ) -> int:
        """Compare every layer of the quantized model with the float model on one sample (``inputs``: one image
        or .npy file per model input) and write ``error_analysis.txt``, ``report.html`` and the tensor dumps to
        ``output_dir``. ``output_dir=None`` writes the tables to ``./snapshot`` without the tensor dumps, as the
        vendor does. With ``target`` the quantized model also runs on that board agent (runtime columns).
        ``analysis_result`` holds the numbers."""
        from rkfarm.analysis import run_accuracy_analysis, sample_feeds

        quant = self._quant
        package = self._require_package("accuracy_analysis()")
        if quant is None:
            raise StateError(
                "accuracy_analysis() compares the float model with the quantized one: call it after "
                "build(do_quantization=True, dataset=...) or hybrid_quantization_step2() (a loaded package "
                "holds only the quantized model)"
            )
        files = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        feeds = sample_feeds(files, package, quant.calibration.model)
        opener = None
        if target is not None:
            from rkfarm.targets import open_agent

            platform = target

            def opener(instrumented: ModelPackage) -> Runtime:
                return open_agent(instrumented, platform, device_id, LoadOptions())

        import onnx

        dump = output_dir is not None
        if not dump:
            log.info("accuracy_analysis: output_dir=None: tables in ./snapshot, no tensor dumps (as the vendor)")
        self._analysis = run_accuracy_analysis(
            quant.calibration.model,
            onnx.load_from_string(package.payload),
            quant.analysed_tensors(),
            feeds,
            Path(output_dir if output_dir is not None else "./snapshot"),
            package.header.source_model_name,
            package,
            opener,
            dump,
        )
        return 0

    @property
    def analysis_result(self) -> AnalysisResult | None:
        """The last accuracy_analysis(): per-layer errors in graph order (rkfarm extension)."""
        return self._analysis

    @property
    def hybrid_result(self) -> HybridResult | None:
        """What auto_hybrid (or step 1's proposal) kept in float and measured (rkfarm extension)."""
        return self._hybrid

    @_vendor_api(-1)
    def export_rknn(self, export_path: str | os.PathLike[str], **kwargs: Any) -> int:
        """Write the built or loaded model package to ``export_path`` (atomically). ``cpp_gen_cfg=True`` (the
        vendor's older spelling of codegen()) also writes the demo project into ``rknn_deploy_demo/`` beside the
        file, replacing an earlier rkfarm demo there (any other non-empty folder is refused)."""
        cpp_gen_cfg = bool(kwargs.pop("cpp_gen_cfg", False))
        if kwargs:
            raise StateError(f"export_rknn: unknown parameter(s) {sorted(kwargs)}")
        package = self._require_package("export_rknn()")
        path = Path(export_path)
        if path.suffix not in (FILE_EXTENSION, ".rknn"):
            log.info("export_rknn: %s has no %s extension (the content is an rkfarm package)", path, FILE_EXTENSION)
        write_package(path, package.header, package.payload)
        log.info("exported %s (%d bytes of payload)", path, len(package.payload))
        if cpp_gen_cfg:
            from rkfarm.codegen import EXPORT_FOLDER, generate

            generate(package, path.parent / EXPORT_FOLDER, replace_demo=True)
        return 0

    def export(self, export_path: str | os.PathLike[str], cpp_gen_cfg: bool = False) -> int:
        """The older spelling of export_rknn()."""
        return self.export_rknn(export_path, cpp_gen_cfg=cpp_gen_cfg)

    @_vendor_api(-1)
    def export_encrypted_rknn_model(
        self,
        input_model: str | os.PathLike[str],
        output_model: str | os.PathLike[str] | None = None,
        crypt_level: int = 1,
        *,
        recipients: Sequence[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        algorithm: str = "AES-256-GCM",
    ) -> int:
        """Encrypt a package file: for the farm key (``RKFARM_FARM_KEY_FILE``, made on first use, as the vendor
        needs no set-up), or sealed to ``recipients`` (agent ids or host:port) so that only those boards can open
        it. Output: ``{name}.crypt{ext}``."""
        from rkfarm.keys import encrypt, ensure_farm_key

        source = Path(input_model)
        if output_model is None:
            output = source.with_name(source.stem + ".crypt" + (source.suffix or FILE_EXTENSION))
            log.warning("export_encrypted_rknn_model: output_model is None, writing %s", output)
        else:
            output = Path(output_model)
        if crypt_level not in (1, 2, 3):
            log.warning("export_encrypted_rknn_model: crypt_level %r is not 1, 2 or 3; using 1", crypt_level)
            crypt_level = 1
        package = read_package(source)
        if not recipients and key_file is None:
            ensure_farm_key()
        sealed = encrypt(package, crypt_level, list(recipients or ()), Path(key_file) if key_file else None, algorithm)
        write_package(output, sealed.header, sealed.payload)
        log.info("encrypted %s -> %s (level %d)", source, output, crypt_level)
        return 0

    @_vendor_api(-1)
    def load_rknn(self, path: str | os.PathLike[str]) -> int:
        """Load a package made by export_rknn() (a vendor .rknn is accepted for boards with librknnrt)."""
        self._close_runtime()
        self._reset()
        self._package = load_package(path)
        return 0

    def _require_package(self, what: str) -> ModelPackage:
        if self._package is None:
            raise StateError(f"{what} needs a model: call build() after load_onnx(), or load_rknn(), first")
        return self._package

    # -- runtime ---------------------------------------------------------------------------------------
    @_vendor_api(-1)
    def init_runtime(
        self,
        target: str | None = None,
        device_id: str | None = None,
        perf_debug: bool = False,
        eval_mem: bool = False,
        async_mode: bool = False,
        core_mask: int = NPU_CORE_AUTO,
        fallback_prior_device: str = "cpu",
        *,
        exclusive: bool = False,
        timeout_s: float | None = None,
    ) -> int:
        """Open the model on the simulator (``target=None``) or on a board agent.

        rkfarm's additions, keyword-only: ``exclusive=True`` holds the board while the runtime is open (other
        clients' runs there are refused, so ``eval_perf`` times this model alone; the hold ends with the runtime,
        or its lease if this process dies); ``timeout_s`` bounds finding, asking and opening on the agent
        (default ``RKFARM_TIMEOUT_S``, else 30 s), retrying within it."""
        package = self._require_package("init_runtime()")
        if core_mask not in platforms.CORE_MASKS:
            raise StateError(f"core_mask {core_mask:#x} is not one of the RKNN.NPU_CORE_* values")
        if async_mode:
            raise NotSupportedError("async_mode is not supported: use the agent's streaming inference instead")
        from rkfarm.targets import open_agent, open_simulator

        self._close_runtime()
        options = LoadOptions(core_mask=core_mask, perf_debug=perf_debug, eval_mem=eval_mem)
        if target is None:
            if device_id is not None:
                log.warning("init_runtime: device_id is ignored on the simulator (target=None)")
            self._runtime = open_simulator(package, options)
        else:
            self._runtime = open_agent(package, target, device_id, options, timeout_s, exclusive=exclusive)
        self._perf_debug = perf_debug
        log.info("runtime ready: %s", self._runtime.where)
        return 0

    def _require_runtime(self, what: str) -> Runtime:
        if self._runtime is None:
            raise StateError(f"{what} needs a runtime: call init_runtime() first")
        return self._runtime

    @_vendor_api(None)
    def inference(
        self,
        inputs: Sequence[npt.ArrayLike] | npt.NDArray[Any],
        data_format: str | Sequence[str | None] | None = None,
        inputs_pass_through: Sequence[int | bool] | None = None,
        get_frame_id: bool = False,
    ) -> list[Array] | None:
        """Run once. Images are NHWC by default (``data_format='nchw'`` if not); mean/std are applied."""
        runtime = self._require_runtime("inference()")
        if get_frame_id:
            raise NotSupportedError("get_frame_id is only meaningful in the vendor's camera async mode")
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        return runtime.inference(list(inputs), data_format, inputs_pass_through)

    @_vendor_api(None)
    def eval_perf(
        self, is_print: bool = True, fix_freq: bool = True, *, runs: int = PERF_RUNS, warmup: int = PERF_WARMUP
    ) -> PerfReport | None:
        """Time the model; per-layer table when init_runtime(perf_debug=True). Returns a PerfReport (a str).
        A model built with rknn_batch_size=N also reports per-sample figures; one built with dynamic_input is timed
        once per shape set (``report.per_shape``; the main figures are the largest set's, as the vendor's)."""
        from rkfarm.perf import evaluate

        runtime = self._require_runtime("eval_perf()")
        package = self._require_package("eval_perf()")
        if runs < 1 or warmup < 0:
            raise StateError("eval_perf: runs must be >= 1 and warmup >= 0")
        report = evaluate(runtime, package.header, PerfOptions(runs, warmup, self._perf_debug))
        if os.environ.get("RKFARM_HISTORY"):  # opt-in perf history (rkfarm.farm.history); never fails this call
            from rkfarm.farm.history import autorecord

            autorecord(
                report, package.header, runtime, {"runs": runs, "warmup": warmup, "perf_debug": self._perf_debug}
            )
        if is_print:
            print(report)
        return report

    @_vendor_api(None)
    def eval_memory(self, is_print: bool = True) -> dict[str, Any] | None:
        """Memory of the opened model: weight, internal (activations), other, total; bytes."""
        runtime = self._require_runtime("eval_memory()")
        result = memory_dict(runtime.eval_memory(), runtime.where)
        if os.environ.get("RKFARM_HISTORY") and self._package is not None:  # opt-in, as eval_perf's
            from rkfarm.farm.history import autorecord

            autorecord(result, self._package.header, runtime)
        if is_print:
            print(format_memory(result))
        return result

    @_vendor_api(([], []))
    def list_devices(self, *, timeout_s: float = 2.0) -> tuple[list[str], list[str]]:
        """Agents found by mDNS and the inventory; prints a table. Returns (agent ids, []) — the vendor's
        (adb_devices, ntb_devices) shape, with agents where the vendor lists adb serials."""
        from rkfarm.remote.discovery import format_devices, list_devices

        devices = list_devices(timeout_s)
        print(format_devices(devices))
        return [d.agent_id for d in devices], []

    def get_sdk_version(self) -> str:
        """The API version, and the runtime's when init_runtime() has been called."""
        import onnxruntime as ort

        lines = [f"API: rkfarm {__version__} (onnxruntime {ort.__version__})"]
        if self._runtime is not None:
            lines.append(self._runtime.versions())
        return "\n".join(lines)

    def clear_op_cache(self) -> None:
        """The vendor clears the state its streaming ops keep between runs; rkfarm's runtimes keep none, so
        there is nothing to clear (the call is accepted so that vendor scripts run)."""
        log.debug("clear_op_cache: no op keeps state between runs in rkfarm")

    # -- vendor features outside rkfarm's scope --------------------------------------------------------
    @_vendor_api(-1)
    def reg_custom_op(self, custom_op: object) -> int:
        """Register a custom op, as the vendor's: an object (or class) with ``op_type`` and
        ``compute(node, inputs) -> [outputs]``, plus ``shape_infer(node, in_shapes, in_dtypes) -> (out_shapes,
        out_dtypes)`` for a ``cst*`` type. Call it before load_onnx(). A ``cst*`` type is a new op; a standard ONNX
        type replaces that op's implementation in the models this object loads. The class runs in this process
        (simulator, calibration, analysis); a board runs it only from a module installed there
        (``rkfarm-agent serve --custom-ops MODULE``), never from the network. Registrations are per process."""
        from rkfarm.runtime import custom_ops

        op_type = custom_ops.register(custom_op)
        if op_type not in self._custom_op_types:
            self._custom_op_types.append(op_type)
        log.info("registered custom op %s", op_type)
        return 0

    @_vendor_api(-1)
    def optimize_onnx(
        self,
        model: str,
        optimized_path: str | None = None,
        passes_enable: Sequence[str] | None = None,
        inputs_for_dump: Sequence[str] | None = None,
    ) -> int:
        raise NotSupportedError("optimize_onnx is not supported: build() applies rkfarm's graph passes")

    @_vendor_api(-1)
    def codegen(self, output_path: str, inputs: Sequence[str] | None = None, overwrite: bool = False) -> int:
        """Write a demo project for the built or loaded model into ``output_path``: for a vendor .rknn a C++
        CMake project over librknnrt's C API, otherwise a Python one over rkfarm_agent.lite.RKNNLite (see
        ``rkfarm.codegen``). ``inputs``: one .npy or image per model input, copied in; a non-empty folder is
        refused unless ``overwrite``."""
        from rkfarm.codegen import generate

        generate(self._require_package("codegen()"), output_path, inputs, overwrite)
        return 0

    # -- teardown --------------------------------------------------------------------------------------
    def _close_runtime(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def release(self) -> None:
        """Free the runtime and the model."""
        self._close_runtime()
        self._reset()

    @property
    def package(self) -> ModelPackage | None:
        """The built or loaded package (rkfarm extension)."""
        return self._package


def _describe_loaded(loaded: LoadedGraph) -> str:
    """One line for the log: what was loaded, its inputs and outputs with their shapes, its size."""
    from rkfarm.graph import dims_of
    from rkfarm_proto.tensors import shape_str

    graph = loaded.model.graph
    inits = {i.name for i in graph.initializer}

    def shown(value: Any) -> str:
        dims = dims_of(value)
        return f"{value.name} {shape_str(dims)}" if dims else value.name

    ins = ", ".join(shown(v) for v in graph.input if v.name not in inits)
    outs = ", ".join(shown(v) for v in graph.output)
    opset = next((o.version for o in loaded.model.opset_import if o.domain in ("", "ai.onnx")), None)
    return (
        f"loaded {loaded.source_name} ({loaded.framework}, sha256 {loaded.source_sha256[:12]}): "
        f"{len(graph.node)} nodes, opset {opset}; inputs {ins}; outputs {outs}"
    )


def _config_signature() -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    defaults = RknnConfig()
    for name in RknnConfig.parameter_names():
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=getattr(defaults, name)))
    return inspect.Signature(params, return_annotation=int)


RKNN.config.__signature__ = _config_signature()  # type: ignore[attr-defined]

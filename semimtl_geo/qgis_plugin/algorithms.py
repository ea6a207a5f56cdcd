"""Processing algorithms of the semimtl-geo provider.

Each algorithm builds a ``semimtl-geo`` command line, runs it with :mod:`.runner`
(progress into the Processing progress bar, log lines into the log, cancel kills the
process) and reports a failure as the CLI's one-sentence error. Outputs are produced in
a hidden temporary folder beside the destination and moved into place only after the
command succeeded, so a failed or canceled run leaves nothing behind.
"""

import os
import shutil
import tempfile
from pathlib import Path
from xml.etree import ElementTree

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import runner
from .settings import cli_setting

_ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class StyleFromSidecar(QgsProcessingLayerPostProcessorInterface):
    """Apply the ``.qml`` written by ``semimtl-geo predict`` to a layer loaded on completion."""

    def __init__(self, qml: str) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        """Load the style file into the layer and redraw it."""
        if layer is not None and os.path.isfile(self.qml):
            message, ok = layer.loadNamedStyle(self.qml)
            if not ok:
                feedback.reportError(f"Could not apply style {self.qml}: {message}")
            layer.triggerRepaint()


def palette_from_qml(qml: Path) -> list[tuple[int, str, str]]:
    """Return ``(value, colour, label)`` of each entry of a paletted raster style."""
    root = ElementTree.parse(qml).getroot()
    return [
        (int(float(e.get("value"))), e.get("color"), e.get("label") or e.get("value"))
        for e in root.iter("paletteEntry")
    ]


def write_polygon_style(gpkg: Path, class_qml: Path, feedback) -> None:
    """Write ``<gpkg>.qml``: polygons coloured by ``class_id`` like the class raster."""
    layer = QgsVectorLayer(str(gpkg), "classes", "ogr")
    if not layer.isValid() or layer.fields().indexOf("class_id") < 0:
        feedback.pushWarning(f"Could not style {gpkg.name}: no 'class_id' field.")
        return
    categories = []
    for value, color, label in palette_from_qml(class_qml):
        symbol = QgsFillSymbol.createSimple(
            {"color": color, "outline_color": "35,35,35,255", "outline_width": "0.1"}
        )
        categories.append(QgsRendererCategory(value, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))
    message, ok = layer.saveNamedStyle(str(gpkg.with_suffix(".qml")))
    if not ok:
        feedback.pushWarning(f"Could not write the polygon style: {message}")


# Post-processors must outlive processAlgorithm (QGIS keeps only a raw pointer).
_POST_PROCESSORS: list[StyleFromSidecar] = []


class CliAlgorithm(QgsProcessingAlgorithm):
    """Common parts: the advanced CLI-path parameter and running the command."""

    #: Advanced parameter: path of the ``semimtl-geo`` executable for this run.
    CLI = "EXECUTABLE"
    #: Its former id, still accepted from scripts and models with a deprecation note.
    LEGACY_CLI = "SEMIMTL_CLI"
    #: What a cancel leaves behind, told to the user.
    CANCELED = "Canceled; no output was written."

    def group(self) -> str:
        """Toolbox group."""
        return ""

    def groupId(self) -> str:  # noqa: N802 - QGIS API
        """Toolbox group id (none: algorithms sit directly under the provider)."""
        return ""

    def icon(self) -> QIcon:
        """Algorithm icon."""
        return QIcon(_ICON)

    def createInstance(self):  # noqa: N802 - QGIS API
        """Return a new instance of the same algorithm class."""
        return type(self)()

    def add_cli_parameter(self) -> None:
        """Advanced parameter overriding where the ``semimtl-geo`` executable is."""
        param = QgsProcessingParameterFile(
            self.CLI, "semimtl-geo executable (empty: plugin setting, install record, PATH)",
            behavior=QgsProcessingParameterFile.File, optional=True,
            fileFilter="All files (*)",  # the default '*.*' rejects 'semimtl-geo' (no dot)
        )
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def run_command(self, args: list[str], parameters, context, feedback) -> runner.RunResult:
        """Run ``semimtl-geo ARGS``; raise QgsProcessingException with the CLI's error."""
        explicit = self.parameterAsFile(parameters, self.CLI, context) or None
        if explicit is None and parameters.get(self.LEGACY_CLI):
            explicit = str(parameters[self.LEGACY_CLI])
            feedback.pushWarning(
                f"The parameter {self.LEGACY_CLI} is deprecated and will stop being read; "
                f"pass the executable as {self.CLI} instead."
            )
        try:
            cli = runner.find_cli(
                explicit=explicit, setting=cli_setting(), warn=feedback.pushWarning
            )
        except runner.CliNotFoundError as exc:
            raise QgsProcessingException(str(exc)) from None
        argv = [cli, *args]
        feedback.pushCommandInfo(" ".join(_quote(a) for a in argv))
        result = runner.run_cli(
            argv,
            on_progress=feedback.setProgress,
            on_log=feedback.pushConsoleInfo,
            is_canceled=feedback.isCanceled,
        )
        if result.canceled:
            raise QgsProcessingException(self.CANCELED)
        if not result.ok:
            raise QgsProcessingException(result.error or "semimtl-geo failed.")
        return result


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


def _raster_path(algorithm, parameters, name, context) -> str:
    layer = algorithm.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(
            "No input raster layer was given; choose a raster layer or file."
        )
    source = layer.source()
    path = source.split("|")[0]
    if layer.providerType() != "gdal" or not os.path.isfile(path):
        raise QgsProcessingException(
            f"Layer '{layer.name()}' is not a raster file on disk; save it as a GeoTIFF "
            "(Export > Save As...) and run the algorithm on that file."
        )
    return path


def _move(src: Path, dst: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    shutil.move(str(src), dst)


class PredictAlgorithm(CliAlgorithm):
    """``semimtl-geo predict`` on one raster layer: styled class and height rasters."""

    INPUT = "INPUT"
    CHECKPOINT = "CHECKPOINT"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    AOI = "AOI"
    TASKS = "TASKS"
    VECTORIZE = "VECTORIZE"
    OUTPUT_CLASS = "OUTPUT_CLASS"
    OUTPUT_HEIGHT = "OUTPUT_HEIGHT"
    OUTPUT_VECTOR = "OUTPUT_VECTOR"

    TASK_CHOICES = ("All tasks of the checkpoint", "Classes only", "Height only")
    RESCALE = "RESCALE"
    #: (label, ``--rescale`` value or None) for rasters whose pixel type differs from the
    #: training pixels the checkpoint records (usually 8-bit 0-255).
    RESCALE_CHOICES = (
        ("As trained (refuse other pixel types)", None),
        ("Stretch each band's 2-98 % percentiles to the training range", "percentile"),
        ("Stretch each band's min-max to the training range", "minmax"),
        ("Use the values unchanged", "none"),
    )

    def name(self) -> str:
        """Algorithm id (``semimtlgeo:predict``)."""
        return "predict"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return "Predict class and height"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help shown beside the dialog."""
        return (
            "Runs a trained semimtl-geo (SemiMTL) checkpoint on a raster layer with "
            "'semimtl-geo predict'. Outputs a class raster (styled with the checkpoint's class "
            "names and colours), a height raster in metres (pseudocolour), and optionally class "
            "polygons. Outputs have the input's CRS and pixel grid. The input's bands must be "
            "those the model was trained on, in the same order (e.g. IR, R, G for ISPRS). A "
            "raster of another pixel type than the training pixels (e.g. 16-bit or 0-1 "
            "reflectance for an 8-bit model) is refused unless 'Input values' says how to "
            "map it.\n\n"
            "The command runs in the Python environment where semimtl-geo is installed; set its "
            "'semimtl-geo' executable in Processing > Options > Providers > semimtl-geo if it is "
            "not on PATH."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        """Declare parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "Checkpoint (.ckpt/.pt from 'semimtl-geo train')",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="Checkpoints (*.ckpt *.pt *.pth);;All files (*)",
        ))
        self.addParameter(QgsProcessingParameterString(
            self.DEVICE, "Device (auto, cpu, cuda, cuda:1...)", defaultValue="auto",
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size (windows per forward pass)",
            type=QgsProcessingParameterNumber.Integer, defaultValue=4, minValue=1,
        ))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, "Area of interest (only pixels inside are predicted)",
            [QgsProcessing.TypeVectorPolygon], optional=True,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            self.TASKS, "Tasks", options=list(self.TASK_CHOICES), defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            self.RESCALE, "Input values", options=[c[0] for c in self.RESCALE_CHOICES],
            defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            self.VECTORIZE, "Vectorize the class raster into polygons", defaultValue=False,
        ))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CLASS, "Classes", optional=True, createByDefault=True,
        ))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_HEIGHT, "Height (m)", optional=True, createByDefault=True,
        ))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_VECTOR, "Class polygons (with 'Vectorize')",
            type=QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=False,
        ))
        self.add_cli_parameter()

    def _tasks(self, parameters, context, want_class: bool, want_height: bool) -> list[str] | None:
        choice = self.parameterAsEnum(parameters, self.TASKS, context)
        tasks = {0: ["seg", "height"], 1: ["seg"], 2: ["height"]}[choice]
        tasks = [t for t in tasks if (t == "seg" and want_class) or (t == "height" and want_height)]
        if not tasks:
            raise QgsProcessingException(
                "No output was requested; set the Classes or Height output (or both)."
            )
        if choice == 0 and len(tasks) == 2:
            return None  # every head of the checkpoint
        return tasks

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run predict into a temporary folder, then move outputs to their destinations."""
        source = _raster_path(self, parameters, self.INPUT, context)
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        class_dst = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLASS, context) or None
        height_dst = self.parameterAsOutputLayer(parameters, self.OUTPUT_HEIGHT, context) or None
        vector_dst = self.parameterAsOutputLayer(parameters, self.OUTPUT_VECTOR, context) or None
        vectorize = self.parameterAsBoolean(parameters, self.VECTORIZE, context) or bool(vector_dst)
        for dst in (class_dst, height_dst):
            if dst and Path(dst).suffix.lower() not in (".tif", ".tiff"):
                raise QgsProcessingException(f"Output '{dst}' must be a GeoTIFF (.tif) file.")
        if vectorize and not class_dst:
            raise QgsProcessingException("Vectorizing needs the Classes output; set it too.")
        if vector_dst and Path(vector_dst).suffix.lower() != ".gpkg":
            raise QgsProcessingException(
                f"Class polygons '{vector_dst}' must be a GeoPackage (.gpkg) file."
            )
        if vectorize and not vector_dst:
            vector_dst = str(Path(class_dst).with_name(Path(class_dst).stem + "_polygons.gpkg"))
            context.addLayerToLoadOnCompletion(vector_dst, QgsProcessingContext.LayerDetails(
                "Class polygons", context.project(), self.OUTPUT_VECTOR,
            ))
        tasks = self._tasks(parameters, context, bool(class_dst), bool(height_dst))

        anchor = Path(class_dst or height_dst).parent
        anchor.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".semimtl-predict-", dir=anchor))
        try:
            args = [
                "predict", source, "-o", str(work), "--checkpoint", checkpoint,
                "--device", self.parameterAsString(parameters, self.DEVICE, context) or "auto",
                "--batch-size", str(self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
                "--no-preview",
            ]
            if tasks:
                args += ["--tasks", ",".join(tasks)]
            aoi = self._aoi_path(parameters, context, feedback, work)
            if aoi:
                args += ["--aoi", aoi]
            if vectorize:
                args.append("--vectorize")
            rescale = self.RESCALE_CHOICES[self.parameterAsEnum(parameters, self.RESCALE,
                                                                 context)][1]
            if rescale:
                args += ["--rescale", rescale]
            self.run_command(args, parameters, context, feedback)
            return self._collect(work, Path(source).stem, class_dst, height_dst, vector_dst,
                                 context, feedback)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _aoi_path(self, parameters, context, feedback, work: Path) -> str | None:
        if parameters.get(self.AOI) in (None, ""):
            return None
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is None:
            return None
        # Memory layers, selections and database layers become a GeoPackage on disk.
        return self.parameterAsCompatibleSourceLayerPath(
            parameters, self.AOI, context, ["gpkg", "shp", "geojson"], "gpkg", feedback,
        )

    def _collect(self, work, stem, class_dst, height_dst, vector_dst, context, feedback) -> dict:
        results = {self.OUTPUT_CLASS: None, self.OUTPUT_HEIGHT: None, self.OUTPUT_VECTOR: None}
        moves = []
        for key, suffix, dst in (
            (self.OUTPUT_CLASS, "class", class_dst), (self.OUTPUT_HEIGHT, "height", height_dst),
        ):
            produced = work / f"{stem}_{suffix}.tif"
            if not dst:
                continue
            if not produced.is_file():
                feedback.pushWarning(f"The checkpoint produced no {suffix} raster; skipped.")
                continue
            moves.append((key, produced, dst))
            qml = produced.with_suffix(".qml")
            if qml.is_file():
                moves.append((None, qml, str(Path(dst).with_suffix(".qml"))))
        if vector_dst:
            gpkgs = sorted(work.glob("*.gpkg"))
            if gpkgs:
                class_qml = work / f"{stem}_class.qml"
                if class_qml.is_file():
                    write_polygon_style(gpkgs[0], class_qml, feedback)
                moves.append((self.OUTPUT_VECTOR, gpkgs[0], vector_dst))
                qml = gpkgs[0].with_suffix(".qml")
                if qml.is_file():
                    moves.append((None, qml, str(Path(vector_dst).with_suffix(".qml"))))
            else:
                feedback.pushWarning("No class polygons were produced.")
        for key, src, dst in moves:
            _move(src, dst)
            if key is not None:
                results[key] = dst
        for key in (self.OUTPUT_CLASS, self.OUTPUT_HEIGHT, self.OUTPUT_VECTOR):
            dst = results[key]
            qml = str(Path(dst).with_suffix(".qml")) if dst else None
            if dst and qml and os.path.isfile(qml) and context.willLoadLayerOnCompletion(dst):
                processor = StyleFromSidecar(qml)
                _POST_PROCESSORS.append(processor)
                context.layerToLoadOnCompletionDetails(dst).setPostProcessor(processor)
        return results


class PrepareIsprsAlgorithm(CliAlgorithm):
    """``semimtl-geo prepare-isprs``: ISPRS downloads to aligned GeoTIFF tiles + manifest."""

    POTSDAM = "POTSDAM"
    VAIHINGEN = "VAIHINGEN"
    BANDS = "BANDS"
    LABELS = "LABELS"
    GSD = "GSD"
    WORKERS = "WORKERS"
    OUTPUT = "OUTPUT"

    BAND_CHOICES = ("IRRG", "RGB", "RGBIR")
    CANCELED = "Canceled; tiles finished before the cancel stay in the output folder."
    LABEL_CHOICES = ("all", "noBoundary")

    def name(self) -> str:
        """Algorithm id (``semimtl-geo:prepare_isprs``)."""
        return "prepare_isprs"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return "Prepare ISPRS Potsdam/Vaihingen"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help shown beside the dialog."""
        return (
            "Runs 'semimtl-geo prepare-isprs': reads the ISPRS 2D semantic labelling downloads "
            "(the folders holding the zips, or extracted folders) and writes georeferenced "
            "image, label and nDSM GeoTIFFs on one grid at the target GSD, plus manifest.json, "
            "ready for 'semimtl-geo train'. Give Potsdam, Vaihingen or both."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        """Declare parameters and outputs."""
        for key, label in ((self.POTSDAM, "Potsdam download folder"),
                           (self.VAIHINGEN, "Vaihingen download folder")):
            self.addParameter(QgsProcessingParameterFile(
                key, label, behavior=QgsProcessingParameterFile.Folder, optional=True,
            ))
        self.addParameter(QgsProcessingParameterEnum(
            self.BANDS, "Potsdam bands", options=list(self.BAND_CHOICES), defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            self.LABELS, "Labels (noBoundary: eroded, boundary ignored)",
            options=list(self.LABEL_CHOICES), defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.GSD, "Target ground sampling distance (m/px)",
            type=QgsProcessingParameterNumber.Double, defaultValue=0.09, minValue=0.01,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, "Tiles prepared in parallel",
            type=QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1,
        ))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, "Prepared dataset folder",
        ))
        self.add_cli_parameter()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run prepare-isprs (each tile is written atomically by the CLI)."""
        potsdam = self.parameterAsFile(parameters, self.POTSDAM, context)
        vaihingen = self.parameterAsFile(parameters, self.VAIHINGEN, context)
        if not potsdam and not vaihingen:
            raise QgsProcessingException("Give the Potsdam or the Vaihingen download folder.")
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        args = ["prepare-isprs", "-o", out]
        if potsdam:
            args += ["--potsdam", potsdam]
        if vaihingen:
            args += ["--vaihingen", vaihingen]
        args += [
            "--bands", self.BAND_CHOICES[self.parameterAsEnum(parameters, self.BANDS, context)],
            "--labels", self.LABEL_CHOICES[self.parameterAsEnum(parameters, self.LABELS, context)],
            "--gsd", repr(self.parameterAsDouble(parameters, self.GSD, context)),
            "--workers", str(self.parameterAsInt(parameters, self.WORKERS, context)),
        ]
        self.run_command(args, parameters, context, feedback)
        return {self.OUTPUT: out}


class EvaluateAlgorithm(CliAlgorithm):
    """``semimtl-geo evaluate``: metrics of a checkpoint on prepared test tiles."""

    CANCELED = "Canceled; no report was written."

    CHECKPOINT = "CHECKPOINT"
    ROOTS = "ROOTS"
    SPLIT = "SPLIT"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    MAX_TILES = "MAX_TILES"
    OUTPUT = "OUTPUT"
    OUTPUT_JSON = "OUTPUT_JSON"

    def name(self) -> str:
        """Algorithm id (``semimtl-geo:evaluate``)."""
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        """Name in the toolbox."""
        return "Evaluate checkpoint"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        """Help shown beside the dialog."""
        return (
            "Runs 'semimtl-geo evaluate': segmentation (pAcc, mIoU, per-class IoU/F1) and height "
            "(AbsRel, RMSE in metres, delta accuracies) metrics of a checkpoint on the full test "
            "tiles of every dataset of its training config, with sliding windows. Writes a "
            "Markdown report and its JSON twin."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        """Declare parameters and outputs."""
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "Checkpoint (.ckpt/.pt from 'semimtl-geo train')",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="Checkpoints (*.ckpt *.pt *.pth);;All files (*)",
        ))
        self.addParameter(QgsProcessingParameterString(
            self.ROOTS,
            "Dataset folders, NAME=PATH separated by ';' (empty: the training config's)",
            optional=True,
        ))
        self.addParameter(QgsProcessingParameterString(self.SPLIT, "Split", defaultValue="test"))
        self.addParameter(QgsProcessingParameterString(
            self.DEVICE, "Device (auto, cpu, cuda...)", defaultValue="auto",
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size", type=QgsProcessingParameterNumber.Integer,
            defaultValue=4, minValue=1,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_TILES, "At most this many tiles per dataset (0: all)",
            type=QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0,
        ))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Report", fileFilter="Markdown (*.md)",
        ))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_JSON, "Report (JSON)"))
        self.add_cli_parameter()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        """Run evaluate; the CLI writes REPORT.md and REPORT.json atomically."""
        report = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        report = report.with_suffix(".md")
        args = [
            "evaluate", "--checkpoint", self.parameterAsFile(parameters, self.CHECKPOINT, context),
            "-o", str(report),
            "--split", self.parameterAsString(parameters, self.SPLIT, context) or "test",
            "--device", self.parameterAsString(parameters, self.DEVICE, context) or "auto",
            "--batch-size", str(self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
        ]
        max_tiles = self.parameterAsInt(parameters, self.MAX_TILES, context)
        if max_tiles:
            args += ["--max-tiles", str(max_tiles)]
        roots = self.parameterAsString(parameters, self.ROOTS, context) or ""
        for item in filter(None, (r.strip() for r in roots.split(";"))):
            args += ["--root", item]
        report.parent.mkdir(parents=True, exist_ok=True)
        self.run_command(args, parameters, context, feedback)
        return {self.OUTPUT: str(report), self.OUTPUT_JSON: str(report.with_suffix(".json"))}


ALGORITHMS = [PredictAlgorithm, PrepareIsprsAlgorithm, EvaluateAlgorithm]

"""The Clay model: layers, encoder/decoder, sensor metadata, checkpoints, inference.

Imported as ``clay_search.model``. Nothing here touches files other than weights, stores or
screens; importing it changes no global torch settings.
"""

from clay_search.model.checkpoints import WeightsInfo, load_encoder, save_weights
from clay_search.model.clay import (
    VARIANTS,
    ClayConfig,
    ClayDecoder,
    ClayEncoder,
    ClayMAE,
    get_config,
)
from clay_search.model.embedder import Embedder, EmbeddingBatch
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.normalise import Normaliser, sensor_normaliser, source_normaliser
from clay_search.model.sensors import Band, Sensor, SensorRegistry, compute_band_stats

__all__ = [
    "VARIANTS",
    "Band",
    "ClayConfig",
    "ClayDecoder",
    "ClayEncoder",
    "ClayMAE",
    "Embedder",
    "EmbeddingBatch",
    "Normaliser",
    "Sensor",
    "SensorRegistry",
    "WeightsInfo",
    "compute_band_stats",
    "encode_latlon",
    "encode_time",
    "get_config",
    "load_encoder",
    "save_weights",
    "sensor_normaliser",
    "source_normaliser",
]

"""State descriptors and side outputs shared by the Flink functions (explicit, named, stable)."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

DEAD_LETTER = OutputTag("dead-letter", Types.STRING())
PREDICTIONS = OutputTag("predictions", Types.STRING())
METRICS = OutputTag("metrics", Types.STRING())
#: a sharded model's merger shards: "<shard> <slice version>" for every slice published (to the manifest writer)
SLICES_PUBLISHED = OutputTag("slices-published", Types.STRING())
#: broadcast state: model name -> operators.model_feed.Accepted
LATEST_MODEL = MapStateDescriptor("latest-model", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
REPLICA = ValueStateDescriptor("replica", Types.PICKLED_BYTE_ARRAY())
MERGER = ValueStateDescriptor("merger", Types.PICKLED_BYTE_ARRAY())
MANIFEST_WRITER = ValueStateDescriptor("manifest-writer", Types.PICKLED_BYTE_ARRAY())

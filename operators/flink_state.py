"""State descriptors and side outputs shared by the Flink functions (explicit, named, stable)."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

DEAD_LETTER = OutputTag("dead-letter", Types.STRING())
PREDICTIONS = OutputTag("predictions", Types.STRING())
METRICS = OutputTag("metrics", Types.STRING())
#: a recommender's user-factor records, ``"<key>\n<JSON>"`` (models.user_factors)
USER_FACTORS = OutputTag("user-factors", Types.STRING())
#: --working-set: the merger shards' answers to pulls, "<replica>\n<JSON>" (to the pulls topic), and read back as
#: Row(replica key, a record frame at PULL_PARTITION) for the replicas' keyed input
PULL_ANSWERS = OutputTag("pull-answers", Types.STRING())
PULL_ROWS = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
#: a sharded model's merger shards: "<shard> <slice version>" for every slice published (to the manifest writer)
SLICES_PUBLISHED = OutputTag("slices-published", Types.STRING())
#: broadcast state: model name -> operators.model_feed.Accepted
LATEST_MODEL = MapStateDescriptor("latest-model", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
REPLICA = ValueStateDescriptor("replica", Types.PICKLED_BYTE_ARRAY())
MERGER = ValueStateDescriptor("merger", Types.PICKLED_BYTE_ARRAY())
MANIFEST_WRITER = ValueStateDescriptor("manifest-writer", Types.PICKLED_BYTE_ARRAY())
#: scatter/gather serving (operators.scatter_gather): the scatter's answers given alone, and each batch's context
SCATTER_ANSWERS = OutputTag("scatter-answers", Types.STRING())
#: (a batch's id, its context message): keyed by batch id in the JVM with the scorers' partials
SCATTER_CONTEXTS = OutputTag("scatter-contexts", Types.ROW([Types.STRING(), Types.STRING()]))
#: the serving job's users' factors (a recommender's, keyed by the user's batch key): JSON id -> "[bias, vector]"
USER_TABLE = MapStateDescriptor("user-factors", Types.STRING(), Types.STRING())
#: broadcast state of the scatter: "scatter" -> its operators.scatter_gather.Scatter; keyed: the batches it stamped
SCATTER = MapStateDescriptor("scatter", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
SCATTER_BATCHES = ValueStateDescriptor("scatter-batches", Types.LONG())
#: a shard scorer's entry (the manifest it stands on, its slice chain) and slice records waiting for a manifest
SCORER_ENTRY = ValueStateDescriptor("scorer-entry", Types.PICKLED_BYTE_ARRAY())
SCORER_PENDING = ListStateDescriptor("scorer-pending", Types.PICKLED_BYTE_ARRAY())
#: the gather's items of one open batch
GATHER_HELD = ValueStateDescriptor("gather-held", Types.PICKLED_BYTE_ARRAY())

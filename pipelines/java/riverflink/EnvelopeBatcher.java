package riverflink;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/**
 * Micro-batches envelope lines per replica key, so that the Python replica trainer pays PyFlink's
 * per-record cost once per batch instead of once per event. A batch is flushed when it holds
 * {@code maxRecords} lines or {@code maxMillis} after its first line, as one string
 * {@code key TAB line NEWLINE line NEWLINE ...}. The buffer is keyed state, so it is checkpointed.
 */
public class EnvelopeBatcher extends KeyedProcessFunction<Integer, String, String> {
    private static final long serialVersionUID = 1L;
    private final int maxRecords;
    private final long maxMillis;
    private transient ListState<String> buffer;
    private transient ValueState<Integer> size;

    public EnvelopeBatcher(int maxRecords, long maxMillis) {
        this.maxRecords = maxRecords;
        this.maxMillis = maxMillis;
    }

    @Override
    public void open(OpenContext openContext) {
        buffer = getRuntimeContext().getListState(new ListStateDescriptor<>("batch", Types.STRING));
        size = getRuntimeContext().getState(new ValueStateDescriptor<>("batch-size", Types.INT));
    }

    @Override
    public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
        buffer.add(line);
        Integer n = size.value();
        int count = (n == null ? 0 : n) + 1;
        if (count == 1) {
            ctx.timerService().registerProcessingTimeTimer(
                    ctx.timerService().currentProcessingTime() + maxMillis);
        }
        if (count >= maxRecords) {
            flush(ctx.getCurrentKey(), out);
        } else {
            size.update(count);
        }
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<String> out) throws Exception {
        flush(ctx.getCurrentKey(), out);
    }

    private void flush(Integer key, Collector<String> out) throws Exception {
        StringBuilder batch = new StringBuilder().append(key).append('\t');
        boolean any = false;
        for (String line : buffer.get()) {
            batch.append(line).append('\n');
            any = true;
        }
        buffer.clear();
        size.clear();
        if (any) {
            out.collect(batch.toString());
        }
    }
}

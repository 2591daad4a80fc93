package riverflink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** Splits a batch of newline-separated records (e.g. JSON lines) into one record per line. */
public class LineSplitter implements FlatMapFunction<String, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(String batch, Collector<String> out) {
        int start = 0;
        int end;
        while ((end = batch.indexOf('\n', start)) >= 0) {
            if (end > start) {
                out.collect(batch.substring(start, end));
            }
            start = end + 1;
        }
        if (start < batch.length()) {
            out.collect(batch.substring(start));
        }
    }
}

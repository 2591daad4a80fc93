package riverflink;

import java.util.Map;
import java.util.Optional;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.WebOptions;
import org.apache.flink.runtime.io.network.netty.InboundChannelHandlerFactory;
import org.apache.flink.shaded.netty4.io.netty.channel.ChannelHandler;

/**
 * Makes Flink's {@code web.cancel.enable} and {@code web.submit.enable} hold for the REST API, not only
 * for the web UI's buttons.
 *
 * <p>Flink registers its job-cancel handler ({@code PATCH /jobs/:jobid}) whatever those settings say.
 * This factory, found by the REST endpoint's {@link java.util.ServiceLoader} when riverflink's jar is on
 * the JobManager's class path (the local mini-cluster; a standalone cluster that has it in {@code lib/}),
 * puts a {@link RestGuard} in front of every handler when either setting is {@code false}: with
 * {@code web.cancel.enable: false} a cancel is answered 403, with {@code web.submit.enable: false} every
 * {@code /jars} request is.  Stopping with a savepoint ({@code POST /jobs/:jobid/stop}) stays allowed.
 * With both settings {@code true} (Flink's defaults) it adds nothing.
 */
public class RestGuardFactory implements InboundChannelHandlerFactory {
    @Override
    public int priority() {
        return 0;
    }

    @Override
    public Optional<ChannelHandler> createHandler(Configuration conf, Map<String, String> responseHeaders) {
        boolean refuseCancel = !conf.get(WebOptions.CANCEL_ENABLE);
        boolean refuseJars = !conf.get(WebOptions.SUBMIT_ENABLE);
        if (!refuseCancel && !refuseJars) {
            return Optional.empty();
        }
        return Optional.of(new RestGuard(refuseCancel, refuseJars, responseHeaders));
    }
}

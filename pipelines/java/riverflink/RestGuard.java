package riverflink;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.regex.Pattern;

import org.apache.flink.shaded.netty4.io.netty.buffer.Unpooled;
import org.apache.flink.shaded.netty4.io.netty.channel.ChannelFutureListener;
import org.apache.flink.shaded.netty4.io.netty.channel.ChannelHandlerContext;
import org.apache.flink.shaded.netty4.io.netty.channel.ChannelInboundHandlerAdapter;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.DefaultFullHttpResponse;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.FullHttpResponse;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.HttpHeaderNames;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.HttpMethod;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.HttpRequest;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.HttpResponseStatus;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.HttpVersion;
import org.apache.flink.shaded.netty4.io.netty.handler.codec.http.QueryStringDecoder;
import org.apache.flink.shaded.netty4.io.netty.util.ReferenceCountUtil;

/**
 * One REST connection's guard (see {@link RestGuardFactory}): answers 403 with a one-sentence JSON error
 * to a job cancel ({@code PATCH /jobs/:jobid}, and the {@code yarn-cancel}/{@code yarn-stop} GET forms)
 * and to anything under {@code /jars}, as configured; passes every other request on unchanged.
 */
public class RestGuard extends ChannelInboundHandlerAdapter {
    private static final Pattern JOB = Pattern.compile("^(/v1)?/jobs/[^/]+/?$");
    private static final Pattern YARN_TERMINATION = Pattern.compile("^(/v1)?/jobs/[^/]+/yarn-(cancel|stop)/?$");
    private static final Pattern JARS = Pattern.compile("^(/v1)?/jars(/.*)?$");

    private final boolean refuseCancel;
    private final boolean refuseJars;
    private final Map<String, String> responseHeaders;

    RestGuard(boolean refuseCancel, boolean refuseJars, Map<String, String> responseHeaders) {
        this.refuseCancel = refuseCancel;
        this.refuseJars = refuseJars;
        this.responseHeaders = responseHeaders;
    }

    /** Why a request is refused, or null if it may pass. */
    String refusal(HttpMethod method, String path) {
        if (refuseCancel && ((HttpMethod.PATCH.equals(method) && JOB.matcher(path).matches())
                || YARN_TERMINATION.matcher(path).matches())) {
            return "job cancel is disabled on this cluster (web.cancel.enable: false); "
                    + "stop the job with a savepoint instead (riverflink stop)";
        }
        if (refuseJars && JARS.matcher(path).matches()) {
            return "jar submission is disabled on this cluster (web.submit.enable: false)";
        }
        return null;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (msg instanceof HttpRequest) {
            HttpRequest request = (HttpRequest) msg;
            String why = refusal(request.method(), new QueryStringDecoder(request.uri()).path());
            if (why != null) {
                ReferenceCountUtil.release(msg);
                byte[] body = ("{\"errors\":[\"" + why + "\"]}").getBytes(StandardCharsets.UTF_8);
                FullHttpResponse response = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1,
                        HttpResponseStatus.FORBIDDEN, Unpooled.wrappedBuffer(body));
                responseHeaders.forEach((k, v) -> response.headers().set(k, v));
                response.headers().set(HttpHeaderNames.CONTENT_TYPE, "application/json; charset=UTF-8");
                response.headers().setInt(HttpHeaderNames.CONTENT_LENGTH, body.length);
                ctx.writeAndFlush(response).addListener(ChannelFutureListener.CLOSE);
                return;
            }
        }
        ctx.fireChannelRead(msg);
    }
}

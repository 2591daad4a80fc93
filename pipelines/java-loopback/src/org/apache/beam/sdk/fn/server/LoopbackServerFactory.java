package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/**
 * riverflink's stand-in for Beam's TCP server factory (the one {@code ServerFactory.createDefault()}
 * returns), so that the gRPC services a Flink TaskManager starts for its Python workers (control, data,
 * state, logging, provisioning, artifacts: six per Python operator) listen on 127.0.0.1 only.
 *
 * <p>Beam's own factory asks for a loopback address but then builds its Netty server with
 * {@code forPort(port)}, which listens on every interface.  This class has the binary name of Beam's
 * nested class; {@code riverflink.loopback.LoopbackAgent} loads it in its place.  It is written against
 * the API flink-python 2.1.3 vendors (gRPC 1.60.1); {@code tests/test_loopback.py} lists the job's
 * listening sockets, so a change shows.
 */
class ServerFactory$InetSocketAddressServerFactory extends ServerFactory {
    private static final long KEEP_ALIVE_SECONDS = 19;  // the keep-alive time Beam's workers expect
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    ServerFactory$InetSocketAddressServerFactory(UrlFactory urlFactory) {
        this(urlFactory, () -> 0);
    }

    ServerFactory$InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
        this.urlFactory = urlFactory;
        this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(List<BindableService> services, ApiServiceDescriptor.Builder descriptor)
            throws IOException {
        InetAddress loopback = InetAddress.getLoopbackAddress();
        Server server = listen(services, new InetSocketAddress(loopback, portSupplier.get()));
        descriptor.setUrl(urlFactory.createUrl(loopback.getHostAddress(), server.getPort()));
        return server;
    }

    @Override
    public Server create(List<BindableService> services, ApiServiceDescriptor descriptor) throws IOException {
        String url = descriptor.getUrl();
        int colon = url.lastIndexOf(':');
        String host = url.substring(0, colon).replace("[", "").replace("]", "");
        return listen(services, new InetSocketAddress(host, Integer.parseInt(url.substring(colon + 1))));
    }

    private static Server listen(List<BindableService> services, InetSocketAddress address) throws IOException {
        NettyServerBuilder builder = NettyServerBuilder.forAddress(address)
                .maxInboundMessageSize(Integer.MAX_VALUE)
                .permitKeepAliveTime(KEEP_ALIVE_SECONDS, TimeUnit.SECONDS);
        for (BindableService service : services) {
            // the workers' id travels in a header that the services read through this interceptor
            builder.addService(ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
        }
        return builder.build().start();
    }
}

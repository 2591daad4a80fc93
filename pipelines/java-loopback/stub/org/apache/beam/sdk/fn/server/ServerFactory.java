package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.util.List;

import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;

/**
 * Compile-time stand-in for the part of Beam's {@code ServerFactory} that riverflink's replacement of its
 * nested TCP factory builds on (compiled, never packaged: the real class comes from flink-python).  With
 * flink-python's own class on the compiler's path, javac 17 crashes on a top-level class named like one
 * of its nested classes.
 */
public abstract class ServerFactory {
    public abstract Server allocateAddressAndCreate(List<BindableService> services,
            ApiServiceDescriptor.Builder descriptor) throws IOException;

    public abstract Server create(List<BindableService> services, ApiServiceDescriptor descriptor)
            throws IOException;

    /** Beam's URL factory: host and port to the URL the workers dial. */
    public interface UrlFactory {
        String createUrl(String host, int port);
    }
}

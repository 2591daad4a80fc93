package riverflink.loopback;

import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.net.URISyntaxException;
import java.security.ProtectionDomain;
import java.util.jar.JarFile;

/**
 * A Java agent ({@code -javaagent:riverflink-loopback.jar}, which riverflink's local runs put in
 * {@code JVM_ARGS}) that loads riverflink's version of Beam's TCP server factory
 * ({@code org.apache.beam.sdk.fn.server.ServerFactory$InetSocketAddressServerFactory}, see
 * {@code LoopbackServerFactory.java}) in place of flink-python's, so that the gRPC services of the
 * Python workers listen on 127.0.0.1 only.  It changes no other class.
 */
public final class LoopbackAgent {
    static final String TARGET = "org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory";

    private LoopbackAgent() {
    }

    public static void premain(String args, Instrumentation instrumentation) throws IOException, URISyntaxException {
        byte[] replacement;
        String jar = new java.io.File(
                LoopbackAgent.class.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath();
        try (JarFile file = new JarFile(jar); InputStream in = file.getInputStream(file.getEntry(TARGET + ".class"))) {
            replacement = in.readAllBytes();
        }
        instrumentation.addTransformer(new ClassFileTransformer() {
            @Override
            public byte[] transform(ClassLoader loader, String name, Class<?> redefined, ProtectionDomain domain,
                                    byte[] original) {
                return TARGET.equals(name) ? replacement : null;
            }
        });
    }
}

// A TLS peer on Java's own stack (JSSE), for sslsocket's interop tests: {packet,4} framing, as an Erlang/OTP peer
// would frame it.
//
//   java JssePeer server PROTOCOL CERT CA [need-client-auth] [close-first]
//       listens on 127.0.0.1, prints "port N", accepts one connection and echoes every packet; at the peer's close
//       prints "closed by peer"; with close-first, closes after the first echo instead.
//   java JssePeer client PROTOCOL PORT CA [CERT] < packets
//       connects to 127.0.0.1:PORT (checking that the certificate names 127.0.0.1), sends each line of standard
//       input as a packet, prints "got LENGTH TEXT" for each reply, then closes: "done".
//
// PROTOCOL is TLSv1.2 or TLSv1.3. CERT is a PEM file holding a certificate and its PKCS#8 key (sslsocket's own
// makecert writes them so); CA a PEM certificate to trust. Every failure prints "error CLASS: MESSAGE".

import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public class JssePeer {
    private static final char[] PASSWORD = "unused".toCharArray();

    public static void main(String[] args) {
        try {
            if (args[0].equals("server")) {
                server(args);
            } else {
                client(args);
            }
        } catch (Exception e) {
            System.out.println("error " + e.getClass().getName() + ": " + e.getMessage());
            System.exit(1);
        }
    }

    private static List<byte[]> pemBlocks(String text, String kind) {
        List<byte[]> blocks = new ArrayList<>();
        Matcher m = Pattern.compile("-----BEGIN " + kind + "-----(.+?)-----END " + kind + "-----", Pattern.DOTALL)
            .matcher(text);
        while (m.find()) {
            blocks.add(Base64.getMimeDecoder().decode(m.group(1)));
        }
        return blocks;
    }

    private static SSLContext context(String certPath, String caPath) throws Exception {
        CertificateFactory x509 = CertificateFactory.getInstance("X.509");
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        String ca = Files.readString(Path.of(caPath));
        trust.setCertificateEntry("ca", x509.generateCertificate(new ByteArrayInputStream(pemBlocks(ca, "CERTIFICATE").get(0))));
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(trust);
        KeyManagerFactory kmf = null;
        if (certPath != null) {
            String pem = Files.readString(Path.of(certPath));
            List<Certificate> chain = new ArrayList<>();
            for (byte[] der : pemBlocks(pem, "CERTIFICATE")) {
                chain.add(x509.generateCertificate(new ByteArrayInputStream(der)));
            }
            byte[] keyDer = pemBlocks(pem, "PRIVATE KEY").get(0);
            String algorithm = chain.get(0).getPublicKey().getAlgorithm();
            PrivateKey key = KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(keyDer));
            KeyStore keys = KeyStore.getInstance("PKCS12");
            keys.load(null, null);
            keys.setKeyEntry("me", key, PASSWORD, chain.toArray(new Certificate[0]));
            kmf = KeyManagerFactory.getInstance("SunX509");
            kmf.init(keys, PASSWORD);
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    private static byte[] readPacket(DataInputStream in) throws Exception {
        int length;
        try {
            length = in.readInt();
        } catch (EOFException e) {
            return null; // the peer closed at a packet boundary
        }
        byte[] data = new byte[length];
        in.readFully(data);
        return data;
    }

    private static void writePacket(DataOutputStream out, byte[] data) throws Exception {
        out.writeInt(data.length);
        out.write(data);
        out.flush();
    }

    private static void server(String[] args) throws Exception {
        String protocol = args[1];
        boolean needClientAuth = List.of(args).contains("need-client-auth");
        boolean closeFirst = List.of(args).contains("close-first");
        SSLContext ctx = context(args[2], args[3]);
        try (SSLServerSocket listener = (SSLServerSocket) ctx.getServerSocketFactory().createServerSocket(
                0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            listener.setEnabledProtocols(new String[] {protocol});
            listener.setNeedClientAuth(needClientAuth);
            System.out.println("port " + listener.getLocalPort());
            System.out.flush();
            try (SSLSocket sock = (SSLSocket) listener.accept()) {
                sock.startHandshake();
                System.out.println("handshake " + sock.getSession().getProtocol() + " " + sock.getSession().getCipherSuite());
                DataInputStream in = new DataInputStream(sock.getInputStream());
                DataOutputStream out = new DataOutputStream(sock.getOutputStream());
                while (true) {
                    byte[] packet = readPacket(in);
                    if (packet == null) {
                        System.out.println("closed by peer");
                        break;
                    }
                    writePacket(out, packet);
                    System.out.println("echoed " + packet.length);
                    if (closeFirst) {
                        System.out.println("closing");
                        break; // try-with-resources: SSLSocket.close(), JSSE's orderly close
                    }
                }
            }
        }
        System.out.println("done");
    }

    private static void client(String[] args) throws Exception {
        String protocol = args[1];
        int port = Integer.parseInt(args[2]);
        SSLContext ctx = context(args.length > 4 ? args[4] : null, args[3]);
        try (SSLSocket sock = (SSLSocket) ctx.getSocketFactory().createSocket("127.0.0.1", port)) {
            sock.setEnabledProtocols(new String[] {protocol});
            SSLParameters params = sock.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS"); // the certificate must name 127.0.0.1
            sock.setSSLParameters(params);
            sock.startHandshake();
            System.out.println("handshake " + sock.getSession().getProtocol() + " " + sock.getSession().getCipherSuite());
            DataInputStream in = new DataInputStream(sock.getInputStream());
            DataOutputStream out = new DataOutputStream(sock.getOutputStream());
            BufferedReader lines = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            String line;
            while ((line = lines.readLine()) != null) {
                writePacket(out, line.getBytes(StandardCharsets.UTF_8));
                byte[] reply = readPacket(in);
                if (reply == null) {
                    System.out.println("closed by peer");
                    return;
                }
                System.out.println("got " + reply.length + " " + new String(reply, StandardCharsets.UTF_8));
            }
        }
        System.out.println("done");
    }
}

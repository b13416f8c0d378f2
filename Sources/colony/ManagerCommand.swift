import ArgumentParser
import Colony
import ColonyObservability
import ColonyServer
import Dispatch
import Foundation
import Logging

/// The port `colony manager` and its clients use when none is given.
let defaultManagerPort = 7373

/// Options shared by commands that talk to a manager as clients.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The manager's host.")
    var host = "127.0.0.1"

    @Option(help: "The manager's port.")
    var port = defaultManagerPort

    @Option(help: "The manager's state directory (its CA and authkey). Default: $COLONY_STATE_DIR, $XDG_STATE_HOME/colony or ~/.local/state/colony.")
    var stateDir: String?

    @Option(help: "A CA file to verify the manager with, instead of the state directory's.")
    var caFile: String?

    @Option(help: "An authkey file, instead of the state directory's.")
    var authkeyFile: String?

    @Flag(help: "Connect without TLS (only to a manager started with --insecure-plaintext).")
    var insecurePlaintext = false

    @Option(help: "Connect over the manager's Unix domain socket at this path (its --unix) instead of TCP and TLS.")
    var unix: String?

    @Option(help: "A client certificate (PEM), for managers started with --client-ca.")
    var clientCertificate: String?

    @Option(help: "The client certificate's private key (PEM).")
    var clientKey: String?

    func connect() async throws -> Manager {
        let (trust, key, certificate) = try credentials()
        if let unix { return try await Manager.connect(unixSocket: unix, authKey: key) }
        return try await Manager.connect(host: host, port: port, authKey: key, trust: trust, clientCertificate: certificate)
    }

    /// How to trust the manager, the authkey, and the client certificate if any.
    func credentials() throws -> (ManagerTrust, [UInt8], ClientCertificate?) {
        let directory = stateDir ?? StateDirectory.defaultPath()
        let trust: ManagerTrust =
            insecurePlaintext ? .insecurePlaintext : caFile.map { .certificateAuthority(path: $0) } ?? .stateDirectory(path: directory)
        let key = try AuthKey.bytes(fromFile: authkeyFile ?? directory + "/authkey")
        let certificate = clientCertificate.map { ClientCertificate(certificatePath: $0, privateKeyPath: clientKey ?? "") }
        return (trust, key, certificate)
    }
}

/// `colony manager`: serve shared objects.
struct ManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Start a manager server holding shared objects.",
        discussion: """
            With no options it listens on 127.0.0.1:\(defaultManagerPort) with TLS 1.3, and on first use creates a \
            state directory with a CA, a certificate for localhost, and a random authkey (mode 0600). It prints how \
            clients connect. SIGINT or SIGTERM shut it down gracefully.
            """)

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one; see --port-file).")
    var port = defaultManagerPort

    @Option(help: "The state directory. Default: $COLONY_STATE_DIR, $XDG_STATE_HOME/colony or ~/.local/state/colony.")
    var stateDir: String?

    @Option(help: "The manager's certificate (PEM), instead of the state directory's.")
    var certificate: String?

    @Option(help: "The manager's private key (PEM), with --certificate.")
    var privateKey: String?

    @Option(help: "Require clients to present a certificate issued by this CA (mutual TLS).")
    var clientCa: String?

    @Option(help: "The authkey file, instead of the state directory's.")
    var authkeyFile: String?

    @Flag(help: "Serve without TLS. Only for loopback tests and benchmarks: the traffic is readable by anyone.")
    var insecurePlaintext = false

    @Option(help: "Most connections at once.")
    var maxConnections = 10_000

    @Option(help: "Largest frame body in bytes (larger messages are chunked).")
    var maxFrame = 1 << 20

    @Option(help: "Most requests one session may have in flight.")
    var maxInFlight = 4096

    @Option(help: "Most objects the manager holds.")
    var maxObjects = 1_000_000

    @Option(help: "Event loop threads (default: one per core).")
    var eventLoopThreads = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Seconds without traffic before a session is pinged; twice that without an answer ends it.")
    var keepalive = 10.0

    @Option(help: "Microseconds an event loop keeps polling for the next request after answering, before it sleeps (0: never). Trades CPU for latency; backs off when requests are far apart. With --persist always, the journal's writer polls as long for the next answer that waits for a sync.")
    var busyPollUs = 200

    @Option(help: "Seconds a new connection has to complete the authkey handshake.")
    var handshakeTimeout = 5.0

    @Option(help: "Write the bound port to this file once listening (useful with --port 0).")
    var portFile: String?

    @Option(help: "Also listen on a Unix domain socket at this path, for clients and worker nodes on this host: mode 0600, the authkey handshake, no TLS.")
    var unix: String?

    @Option(help: "Seconds between looks for anonymous objects that only reference each other (freed then); 0 never.")
    var collectCycles: Double = 10

    @Option(help: "The most memory the manager holds, like Redis's maxmemory: bytes, or with K, M, G or T (powers of 1024). Past it, requests that would grow it fail with OutOfMemory. Default: three quarters of the machine's (or cgroup's) memory.")
    var maxMemory: ByteCount?

    @Option(help: "Keep named dicts, lists, sets, Namespaces, Values, Arrays, queues, locks, semaphores and events across restarts, in the state directory's journal and snapshot, like Redis's appendonly: no (the default: written within milliseconds, the OS syncs), everysec (synced each second), always (synced before each change is acknowledged), or off (nothing kept).")
    var persist: PersistOption = .no

    @Option(help: "With --persist: compact the journal into a snapshot once it is this large (and larger than the last snapshot), like Redis's auto-aof-rewrite-min-size.")
    var journalCompactSize = ByteCount(argument: "64M")!

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Log lines as text, or as json (one object per line with session, peer, role and node as fields, for log shippers).")
    var logFormat: LogFormat = .text

    @Option(
        help: "Serve a live dashboard at /, the status as JSON at /api/status and Prometheus metrics at /metrics, over HTTP at HOST:PORT (port 0 picks a free one). On loopback anyone on this host may open them; on any other address they take TLS with the manager's certificate and the token this command prints.",
        transform: { try HTTPListenAddress(parsing: $0) })
    var httpListen: HTTPListenAddress?

    @Flag(help: "With --http-listen: require the token on loopback too (a host shared with other users), and serve it over TLS like off loopback.")
    var httpRequireToken = false

    @Flag(help: "With --http-listen and the token: scrapers may read /metrics without it.")
    var metricsPublic = false

    @Option(help: "Write the HTTP listener's bound port to this file once listening (with --http-listen HOST:0).")
    var httpPortFile: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535, got \(port)") }
        guard maxConnections > 0, maxInFlight > 0, maxObjects > 0 else {
            throw ValidationError("--max-connections, --max-in-flight and --max-objects must be positive")
        }
        guard maxFrame >= 1024 else { throw ValidationError("--max-frame must be at least 1024 bytes") }
        guard eventLoopThreads >= 1 else { throw ValidationError("--event-loop-threads must be at least 1") }
        guard keepalive > 0 else { throw ValidationError("--keepalive must be positive") }
        guard collectCycles >= 0, collectCycles <= 86_400 else { throw ValidationError("--collect-cycles must be 0...86400 seconds, got \(collectCycles)") }
        guard (0...1_000_000).contains(busyPollUs) else { throw ValidationError("--busy-poll-us must be 0...1000000, got \(busyPollUs)") }
        guard handshakeTimeout > 0, handshakeTimeout <= 600 else { throw ValidationError("--handshake-timeout must be in (0, 600]") }
        guard (certificate == nil) == (privateKey == nil) else {
            throw ValidationError("--certificate and --private-key go together")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if let httpListen, !DashboardAccess.isLoopback(host: httpListen.host), insecurePlaintext {
            throw ValidationError(
                "--http-listen \(httpListen.host) is not loopback, and the dashboard there needs TLS, which --insecure-plaintext turns off; listen on 127.0.0.1, or drop --insecure-plaintext")
        }
        guard httpListen != nil || (!metricsPublic && !httpRequireToken && httpPortFile == nil) else {
            throw ValidationError("--metrics-public, --http-require-token and --http-port-file go with --http-listen")
        }
    }

    func run() async throws {
        if logFormat == .json { LoggingSystem.bootstrap { JSONLogHandler(label: $0) } }
        var logger = Logger(label: "colony.manager")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let directory = StateDirectory(path: stateDir ?? StateDirectory.defaultPath())
        let created = try directory.prepare()
        for path in created { logger.notice("created \(path)") }

        let transport: ManagerConfiguration.Transport =
            insecurePlaintext
            ? .insecurePlaintext
            : .tls(
                certificatePath: certificate ?? directory.managerCertificatePath,
                privateKeyPath: privateKey ?? directory.managerKeyPath, clientCAPath: clientCa)
        let authkeyPath = authkeyFile ?? directory.authKeyPath
        let authKey = try AuthKey.bytes(fromFile: authkeyPath)
        var configuration = ManagerConfiguration(host: host, port: port, transport: transport, authKey: authKey)
        configuration.maxConnections = maxConnections
        configuration.maxFrameBody = maxFrame
        configuration.maxInFlight = maxInFlight
        configuration.maxObjects = maxObjects
        configuration.eventLoopThreads = eventLoopThreads
        configuration.keepaliveIntervalSeconds = keepalive
        configuration.busyPollMicroseconds = busyPollUs
        configuration.handshakeTimeoutSeconds = handshakeTimeout
        configuration.logger = logger
        configuration.unixSocketPath = unix
        configuration.objectIDFile = directory.objectIDsPath
        configuration.cycleCollectionSeconds = collectCycles
        configuration.maxMemory = maxMemory?.bytes
        if let durability = persist.durability {
            configuration.persistDirectory = directory.path
            configuration.journalCompactionBytes = journalCompactSize.bytes
            configuration.durability = durability
        }

        let exporter = httpListen.map { _ in PrometheusExporter() }
        configuration.metrics = exporter?.metrics

        let server = try ManagerServer(configuration: configuration)
        let address = try await server.start()
        let boundPort = address.port ?? port
        let security = insecurePlaintext ? "PLAINTEXT, NOT ENCRYPTED" : "TLS 1.3" + (clientCa == nil ? "" : " with client certificates")
        print("""
            colony manager listening on \(host):\(boundPort) (\(security))
              authkey:  \(authkeyPath)
              CA:       \(insecurePlaintext ? "none" : directory.caCertificatePath)
              connect:  try await Manager.connect(host: "\(host)", port: \(boundPort), trust: .stateDirectory(path: "\(directory.path)"))
              status:   colony status --port \(boundPort) --state-dir \(directory.path)
              persist:  \(persist.durability == nil ? "off (named objects last until the manager stops)" : "\(persist.rawValue): journal and snapshot in \(directory.path)")
            """)
        if let unix {
            print("""
                  unix:     \(unix) (mode 0600, no TLS): Manager.connect(unixSocket: "\(unix)", stateDirectory: "\(directory.path)")
                """)
        }
        var dashboard: Dashboard?
        if let httpListen, let exporter {
            // Wherever the token is needed it travels over TLS (on loopback, unless the manager
            // itself runs without TLS).
            let needsToken = httpRequireToken || !DashboardAccess.isLoopback(host: httpListen.host)
            var settings = DashboardConfiguration(
                host: httpListen.host, port: httpListen.port,
                access: DashboardAccess(authKey: authKey, requiresToken: needsToken, metricsArePublic: metricsPublic))
            if needsToken, !insecurePlaintext {
                settings.certificatePath = certificate ?? directory.managerCertificatePath
                settings.privateKeyPath = privateKey ?? directory.managerKeyPath
            }
            settings.logger = logger
            let started = try Dashboard(manager: server, exporter: exporter, configuration: settings)
            let bound = try await started.start()
            dashboard = started
            let url = "\(settings.usesTLS ? "https" : "http")://\(httpListen.urlHost):\(bound.port ?? httpListen.port)/"
            server.announceDashboard(url: url)
            if let httpPortFile { try "\(bound.port ?? httpListen.port)\n".write(toFile: httpPortFile, atomically: true, encoding: .utf8) }
            print("""
                  dashboard: \(needsToken ? url + "?token=" + settings.access.token + " (the token also works as Authorization: Bearer)" : url)
                  metrics:   \(url)metrics\(needsToken && !metricsPublic ? " (with the token)" : "")
                """)
        }
        // Last: whoever waits for the port file finds every listener up.
        if let portFile { try "\(boundPort)\n".write(toFile: portFile, atomically: true, encoding: .utf8) }
        fflush(nil)  // all streams: the lines above must reach a pipe before we block
        if insecurePlaintext { logger.warning("serving without TLS: anyone on the network path can read and change the traffic") }

        await waitForTerminationSignal()
        logger.notice("shutting down: finishing in-flight requests and closing sessions")
        await dashboard?.shutdown()
        await server.shutdown(gracePeriod: 5)
        logger.notice("stopped")
    }
}

/// Suspends until SIGINT or SIGTERM arrives.
func waitForTerminationSignal() async {
    let arrived = Colony.Event()
    for signalNumber in [SIGINT, SIGTERM] {
        signal(signalNumber, SIG_IGN)  // deliver it to the dispatch source instead
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { arrived.set() }
        source.resume()
        signalSources.append(source)
    }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async {
            arrived.wait()
            continuation.resume()
        }
    }
}

/// The signal sources live as long as the manager.
nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

/// A size on the command line: `1073741824`, `512M`, `1.5G`, `2GiB` (powers of 1024).
/// `--persist`: off, or the journal's sync policy.
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

enum PersistOption: String, ExpressibleByArgument, CaseIterable, Sendable {
    case off, no, everysec, always

    var durability: DurabilityPolicy? { DurabilityPolicy(rawValue: rawValue) }
}

struct ByteCount: ExpressibleByArgument, Sendable {
    let bytes: Int

    init?(argument: String) {
        let text = argument.trimmingCharacters(in: .whitespaces).uppercased()
        var digits = Substring(text)
        for suffix in ["IB", "B"] where digits.hasSuffix(suffix) { digits = digits.dropLast(suffix.count); break }
        var scale = 1.0
        if let unit = digits.last, let power = ["K": 1, "M": 2, "G": 3, "T": 4][String(unit)] {
            scale = pow(1024, Double(power))
            digits = digits.dropLast()
        }
        guard let number = Double(digits), number.isFinite, number > 0, number * scale < Double(Int.max) else { return nil }
        bytes = Int(number * scale)
        guard bytes > 0 else { return nil }
    }
}

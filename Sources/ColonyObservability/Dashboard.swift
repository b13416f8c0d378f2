import ColonyServer
import ColonyWire
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Where and how `colony manager --http-listen` serves its dashboard, `/api` and `/metrics`.
public struct DashboardConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The manager's certificate chain and key (PEM): with both, the listener speaks TLS.
    /// Required on any address but loopback.
    public var certificatePath: String?
    public var privateKeyPath: String?
    public var access: DashboardAccess
    public var logger = Logger(label: "colony.dashboard")
    /// How often the page's live feed (`/api/events`) sends the status.
    public var eventInterval: Duration = .seconds(1)

    public init(host: String, port: Int, access: DashboardAccess) {
        self.host = host
        self.port = port
        self.access = access
    }

    public var usesTLS: Bool { certificatePath != nil && privateKeyPath != nil }
}

/// A reason the dashboard cannot start, with what to do about it.
public struct DashboardError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The manager's HTTP listener (hummingbird): the live dashboard at `/`, the status as JSON
/// at `/api/status` (what `colony status --json` prints) and as a server-sent event stream at
/// `/api/events`, and Prometheus text at `/metrics`.
///
/// States: created → running (`start`) → stopped (`shutdown`: stops accepting, ends the
/// event streams, waits for requests in flight).
public final class Dashboard: Sendable {
    private let manager: ManagerServer
    private let exporter: PrometheusExporter
    private let configuration: DashboardConfiguration
    private let running = Mutex<(group: ServiceGroup, task: Task<Void, any Error>)?>(nil)
    /// The rows of the object table the live feed sends each second (a manager may hold a
    /// million objects); the feed also sends the total and the sums by type.
    static let objectRows = 200

    public init(manager: ManagerServer, exporter: PrometheusExporter, configuration: DashboardConfiguration) throws {
        guard configuration.usesTLS || DashboardAccess.isLoopback(host: configuration.host) else {
            throw DashboardError(
                "the dashboard on \(configuration.host) would carry object names and the token in clear text: serve it on loopback, or run the manager with TLS")
        }
        guard configuration.access.requiresToken || DashboardAccess.isLoopback(host: configuration.host) else {
            throw DashboardError("the dashboard on \(configuration.host) must require the token: it is not on loopback")
        }
        self.manager = manager
        self.exporter = exporter
        self.configuration = configuration
    }

    /// Binds and starts serving; returns the address bound (port 0 picks one).
    public func start() async throws -> SocketAddress {
        let server: HTTPServerBuilder
        if let certificatePath = configuration.certificatePath, let privateKeyPath = configuration.privateKeyPath {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)))
            tls.minimumTLSVersion = .tlsv12  // browsers and scrapers, not only our own clients
            server = try .tls(.http1(), tlsConfiguration: tls)
        } else {
            server = .http1()
        }
        let (addresses, bound) = AsyncStream<SocketAddress?>.makeStream()
        let application = Application(
            router: makeRouter(), server: server,
            configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port), serverName: "colony"),
            onServerRunning: { channel in
                bound.yield(channel.localAddress)
                bound.finish()
            },
            logger: configuration.logger)
        var groupConfiguration = ServiceGroupConfiguration(services: [application], logger: configuration.logger)
        // Event streams end at the graceful shutdown; anything else is cancelled soon after.
        groupConfiguration.maximumGracefulShutdownDuration = Duration.seconds(3)
        let group = ServiceGroup(configuration: groupConfiguration)
        let task = Task {
            defer { bound.finish() }
            try await group.run()
        }
        running.withLock { $0 = (group, task) }
        for await address in addresses {
            if let address { return address }
        }
        try await task.value
        throw DashboardError("the dashboard's listener on \(configuration.host):\(configuration.port) stopped before it started")
    }

    /// Stops accepting, ends the event streams and waits for the requests in flight.
    public func shutdown() async {
        guard let (group, task) = running.withLock({ $0.take() }) else { return }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    private func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: AccessMiddleware(access: configuration.access))
        let manager = manager
        let exporter = exporter
        let interval = configuration.eventInterval
        router.get("/") { _, _ in
            Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    // The page is self-contained: nothing may load from elsewhere.
                    .contentSecurityPolicy: "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(string: DashboardPage.html)))
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: exporter.scrape(manager.statusReport(objectRowLimit: 0)))))
        }
        router.get("/api/status") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: ResponseBody(byteBuffer: ByteBuffer(data: try manager.statusReport().jsonData())))
        }
        router.get("/api/events") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                body: ResponseBody { writer in
                    while !Task.isCancelled, !Task.isShuttingDownGracefully {
                        let snapshot = try manager.statusReport(objectRowLimit: Dashboard.objectRows).jsonData()
                        try await writer.write(ByteBuffer(string: "data: \(String(decoding: snapshot, as: UTF8.self))\n\n"))
                        try? await Task.sleep(for: interval)
                    }
                    try await writer.finish(nil)
                })
        }
        return router
    }
}

/// Checks every request against `DashboardAccess`; a page opened with a good `?token=` gets
/// it as a cookie, so that its own requests (the event stream cannot send headers) carry it.
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let access: DashboardAccess

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let queryToken = request.uri.queryParameters["token"].map(String.init)
        guard
            access.allows(
                path: request.uri.path, authorization: request.headers[.authorization],
                cookie: request.cookies[DashboardAccess.cookieName]?.value, queryToken: queryToken)
        else {
            return Response(
                status: .unauthorized, headers: [.wwwAuthenticate: "Bearer", .contentType: "text/plain; charset=utf-8"],
                body: ResponseBody(
                    byteBuffer: ByteBuffer(
                        string: "this manager's dashboard needs its token: open the URL `colony status --dashboard-url` prints, or send Authorization: Bearer <token>\n"
                    )))
        }
        var response = try await next(request, context)
        if access.requiresToken, queryToken != nil, request.uri.path == "/" {
            response.setCookie(Cookie(name: DashboardAccess.cookieName, value: access.token, path: "/", secure: true, httpOnly: true, sameSite: .strict))
        }
        return response
    }
}

import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// What an HTTP request to the manager's listener got back.
struct HTTPAnswer {
    var status: Int
    /// Header names in lower case.
    var headers: [String: String]
    var body: String
}

/// One HTTP/1.1 GET over a fresh connection (TLS checked against `caFile` when given), for
/// testing the manager's HTTP listener from outside its own stack. `firstEvent` reads a
/// server-sent event stream only up to its first event, then closes.
func httpRequest(_ url: String, caFile: String? = nil, headers: [String: String] = [:], firstEvent: Bool = false) async throws -> HTTPAnswer {
    guard let parsed = URLComponents(string: url), let host = parsed.host, let port = parsed.port else {
        throw HTTPTestError("not an http(s)://host:port/ URL: \(url)")
    }
    let target = parsed.percentEncodedPath + (parsed.percentEncodedQuery.map { "?" + $0 } ?? "")
    let sslContext = try caFile.map { file -> NIOSSLContext in
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(file))
        return try NIOSSLContext(configuration: tls)
    }
    let collector = ResponseCollector(firstEvent: firstEvent)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let sslContext {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: nil))
                }
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(collector)
            }
        }
        .connect(host: host, port: port).get()
    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.isEmpty ? "/" : target)
    head.headers.add(name: "Host", value: "\(host):\(port)")
    head.headers.add(name: "Connection", value: "close")
    for (name, value) in headers { head.headers.add(name: name, value: value) }
    channel.write(HTTPClientRequestPart.head(head), promise: nil)
    try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
    let timeout = channel.eventLoop.scheduleTask(in: .seconds(20)) { channel.close(promise: nil) }
    defer { timeout.cancel() }
    let answer = try await collector.answer.futureResult.get()
    try? await channel.close().get()
    return answer
}

struct HTTPTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Gathers one response; with `firstEvent`, answers as soon as the body holds one
/// server-sent event.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    private let firstEvent: Bool
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private var promise: EventLoopPromise<HTTPAnswer>?
    private var done = false
    // Set in handlerAdded, before any read.
    var answer: EventLoopPromise<HTTPAnswer> { promise! }

    init(firstEvent: Bool) { self.firstEvent = firstEvent }

    func handlerAdded(context: ChannelHandlerContext) { promise = context.eventLoop.makePromise() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let received):
            head = received
        case .body(var bytes):
            body.writeBuffer(&bytes)
            if firstEvent, String(buffer: body).contains("\n\n") { finish() }
        case .end:
            finish()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(HTTPTestError("the connection closed before a whole response"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        guard !done else { return }
        done = true
        promise?.fail(error)
    }

    private func finish() {
        guard !done, let head else { return }
        done = true
        var headers: [String: String] = [:]
        for (name, value) in head.headers { headers[name.lowercased()] = headers[name.lowercased()].map { $0 + ", " + value } ?? value }
        promise?.succeed(HTTPAnswer(status: Int(head.status.code), headers: headers, body: String(buffer: body)))
    }
}

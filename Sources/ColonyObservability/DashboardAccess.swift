import ColonyWire
import Crypto
import Foundation

/// Who may open the dashboard, `/api` and `/metrics`. On loopback anyone on the host may (as
/// with `colony status` over the Unix socket's peers); on any other address a request must
/// carry the bearer token derived from the manager's authkey: as `Authorization: Bearer`,
/// as the `colony_token` cookie the page sets, or as `?token=` in the URL that
/// `colony manager` and `colony status --dashboard-url` print. `/metrics` can be opened to
/// scrapers without it (`--metrics-public`).
public struct DashboardAccess: Sendable, Equatable {
    /// The token, 64 hex digits: HMAC-SHA256 of a fixed label under the authkey, so that
    /// whoever holds the authkey can compute it and the token does not reveal the key.
    public let token: String
    public let requiresToken: Bool
    public let metricsArePublic: Bool

    public init(authKey: [UInt8], requiresToken: Bool, metricsArePublic: Bool = false) {
        token = Self.token(authKey: authKey)
        self.requiresToken = requiresToken
        self.metricsArePublic = metricsArePublic
    }

    public static func token(authKey: [UInt8]) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: Array("colony dashboard token v1".utf8), using: SymmetricKey(data: authKey))
        return AuthKey.hex(Array(code))
    }

    static let cookieName = "colony_token"

    /// Whether a request for `path` that presented these credentials may be answered.
    public func allows(path: String, authorization: String?, cookie: String?, queryToken: String?) -> Bool {
        guard requiresToken, !(metricsArePublic && path == "/metrics") else { return true }
        let presented = [authorization.flatMap(Self.bearer), cookie, queryToken].compactMap { $0 }
        return presented.contains { Self.equalInConstantTime($0, token) }
    }

    private static func bearer(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return parts[1].trimmingCharacters(in: .whitespaces)
    }

    private static func equalInConstantTime(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Whether `host` names this machine's loopback only (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(host: String) -> Bool {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if bare == "localhost" || bare == "::1" { return true }
        let octets = bare.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// `--http-listen HOST:PORT`: where the manager's HTTP listener binds (`[::1]:8080` for IPv6).
public struct HTTPListenAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":") else {
            throw DashboardError("'\(text)' is not HOST:PORT; for example 127.0.0.1:9090, or 127.0.0.1:0 to pick a free port")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains("[") else { throw DashboardError("'\(text)' names no host; for example 127.0.0.1:9090") }
        guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw DashboardError("'\(text)' has no port in 0...65535 after its last ':'")
        }
        self.init(host: host, port: port)
    }

    /// The host as a URL writes it (IPv6 addresses in brackets).
    public var urlHost: String { host.contains(":") ? "[\(host)]" : host }
}

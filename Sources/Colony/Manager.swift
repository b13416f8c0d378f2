import ColonyTransport
import ColonyWire
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Threading

/// A connection to a Colony manager (Python `multiprocessing.managers.SyncManager` after
/// `connect()`), and the factory of shared-object proxies.
///
///     let manager = try await Manager.connect(port: 5000, trust: .stateDirectory(path: dir))
///     let config = try await manager.dict("config", String.self, Int.self)
///     try await config.set("workers", 4)
public final class Manager: @unchecked Sendable {
    let connection: ManagerConnection
    /// How this manager was reached, for proxies handed to child processes.
    let address: ManagerAddress

    private init(connection: ManagerConnection, address: ManagerAddress) {
        self.connection = connection
        self.address = address
    }

    /// The event loops that connections use unless `connect` is given others: Colony's own,
    /// one thread per core, made on first use and never shut down. Not NIO's singleton, so
    /// that a busy poll never holds up other libraries' work on those loops.
    public static let defaultEventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)

    /// Connects and authenticates. `authKey` defaults to the state directory's when `trust`
    /// is `.stateDirectory`. `serverName` is the name the manager's certificate must carry.
    ///
    /// `busyPoll` is how long the connection's event-loop thread keeps polling for answers
    /// before it sleeps (README, "Busy polling"): a nearby manager's answer then needs no
    /// thread wake-up, which on virtual machines makes calls several times faster, for at most
    /// that much CPU per wait. A poll that keeps timing out backs off by itself. `.zero` turns
    /// it off; at most one second.
    public static func connect(
        host: String = "127.0.0.1", port: Int, authKey: [UInt8]? = nil, trust: ManagerTrust,
        clientCertificate: ClientCertificate? = nil, serverName: String = "localhost", timeoutSeconds: Double = 10,
        eventLoopGroup: any EventLoopGroup = Manager.defaultEventLoopGroup, busyPoll: Duration = .microseconds(200)
    ) async throws -> Manager {
        guard busyPoll >= .zero, busyPoll <= .seconds(1) else {
            throw ConnectionError("busyPoll must be between zero and one second, not \(busyPoll)")
        }
        let (key, tls) = try credentials(authKey: authKey, trust: trust, clientCertificate: clientCertificate)
        // By default all connections of a process share Colony's event loops (one thread per
        // core): a thread per connection would mostly add context switches.
        let address = ManagerAddress(
            host: host, port: port, authKey: key, trust: trust, clientCertificate: clientCertificate, serverName: serverName,
            timeoutSeconds: timeoutSeconds, busyPoll: busyPoll)
        let connection = try await ManagerConnection.open(
            host: host, port: port, authKey: key, tls: tls, serverName: serverName,
            group: eventLoopGroup, timeoutSeconds: timeoutSeconds, busyPollNanoseconds: address.busyPollNanoseconds)
        return Manager(connection: connection, address: address)
    }

    /// Connects over the manager's Unix domain socket (`colony manager --unix PATH`): for
    /// clients on the manager's host, the authkey handshake without TLS (the socket file is
    /// mode 0600). The authkey is `authKey`, or the one in `stateDirectory`.
    public static func connect(
        unixSocket path: String, authKey: [UInt8]? = nil, stateDirectory: String? = nil, timeoutSeconds: Double = 10,
        eventLoopGroup: any EventLoopGroup = Manager.defaultEventLoopGroup, busyPoll: Duration = .microseconds(200)
    ) async throws -> Manager {
        guard busyPoll >= .zero, busyPoll <= .seconds(1) else {
            throw ConnectionError("busyPoll must be between zero and one second, not \(busyPoll)")
        }
        let key = try authKey ?? stateDirectory.map { try AuthKey.bytes(fromFile: $0 + "/authkey") }
        guard let key else { throw ConnectionError("no authkey: pass authKey, or the state directory that holds one") }
        var address = ManagerAddress(
            host: "", port: 0, authKey: key, trust: .insecurePlaintext, clientCertificate: nil, serverName: "",
            timeoutSeconds: timeoutSeconds, busyPoll: busyPoll)
        address.unixSocketPath = path
        let connection = try await ManagerConnection.open(
            host: "", port: 0, authKey: key, tls: nil, serverName: nil, group: eventLoopGroup, timeoutSeconds: timeoutSeconds,
            busyPollNanoseconds: address.busyPollNanoseconds, unixSocketPath: path)
        return Manager(connection: connection, address: address)
    }

    /// The authkey and TLS configuration a connection uses, from what the caller gave.
    static func credentials(authKey: [UInt8]?, trust: ManagerTrust, clientCertificate: ClientCertificate?) throws
        -> (key: [UInt8], tls: TLSConfiguration?)
    {
        var key = authKey
        var tls: TLSConfiguration?
        switch trust {
        case .insecurePlaintext:
            tls = nil
        case .certificateAuthority(let path):
            tls = try clientTLS(caPath: path, clientCertificate: clientCertificate)
        case .stateDirectory(let directory):
            tls = try clientTLS(caPath: directory + "/ca.pem", clientCertificate: clientCertificate)
            if key == nil { key = try AuthKey.bytes(fromFile: directory + "/authkey") }
        }
        guard let key else {
            throw ConnectionError("no authkey: pass authKey, or trust a state directory that holds one")
        }
        return (key, tls)
    }

    private static func clientTLS(caPath: String, clientCertificate: ClientCertificate?) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        if let clientCertificate {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(clientCertificate.certificatePath).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: clientCertificate.privateKeyPath, format: .pem))
        }
        return tls
    }

    /// What the handshake agreed on (session id, limits).
    public var session: NegotiatedSession { connection.session }

    /// Whether the connection is still up.
    public var isConnected: Bool { connection.isOpen }

    /// The manager's instance identity (hex), new at each start of the manager: two
    /// connections that see different ones straddle a restart, and objects only the earlier
    /// run held are gone (their ids are never reused: proxies of them fail with NoSuchObject).
    public var instance: String { AuthKey.hex(connection.session.instance) }

    /// Says goodbye and closes the connection. Proxies stop working.
    public func close() async {
        await connection.close()
    }

    // MARK: Objects

    func make(_ type: ObjectType, _ name: String?, _ options: WireValue) async throws -> ProxyHandle {
        let answer = try await connection.call(.new(type: type, name: name, options: options))
        guard let reference = answer.objectRefValue else {
            throw ConnectionError("the manager answered 'new' with \(answer.kindDescription)")
        }
        return ProxyHandle(manager: self, reference: reference)
    }

    /// Python `manager.dict()`; with a name, creates it or opens the existing one.
    public func dict<Key: Codable & Hashable & Sendable, Value: Codable & Sendable>(
        _ name: String? = nil, _ keyType: Key.Type, _ valueType: Value.Type
    ) async throws -> DictProxy<Key, Value> {
        DictProxy(handle: try await make(.dict, name, .null))
    }

    /// Python `manager.list()`.
    public func list<Element: Codable & Sendable>(_ name: String? = nil, _ elementType: Element.Type) async throws -> ListProxy<Element> {
        ListProxy(handle: try await make(.list, name, .null))
    }

    /// Python 3.14 `manager.set()`.
    public func set<Element: Codable & Hashable & Sendable>(_ name: String? = nil, _ elementType: Element.Type) async throws -> SetProxy<Element> {
        SetProxy(handle: try await make(.set, name, .null))
    }

    /// Python `manager.Namespace()`.
    public func namespace(_ name: String? = nil) async throws -> NamespaceProxy {
        NamespaceProxy(handle: try await make(.namespace, name, .null))
    }

    /// Python `manager.Value(typecode, value)`. `typecode` is one of Python's `array`
    /// typecodes (`"i"`, `"d"`, ...) or nil for any value.
    public func value<Element: Codable & Sendable>(
        _ name: String? = nil, typecode: String? = nil, _ initial: Element
    ) async throws -> ValueProxy<Element> {
        let options: WireValue = ["typecode": typecode.map(WireValue.string) ?? .null, "value": try wire(initial)]
        return ValueProxy(handle: try await make(.value, name, options))
    }

    /// Python `manager.Array(typecode, sequence)`.
    public func array<Element: Codable & Sendable>(
        _ name: String? = nil, typecode: String, _ items: [Element]
    ) async throws -> ArrayProxy<Element> {
        let options: WireValue = ["typecode": .string(typecode), "items": .array(try items.map(wire))]
        return ArrayProxy(handle: try await make(.array, name, options))
    }

    /// Python `manager.Array(typecode, size)`: `size` zeros (of the typecode's kind).
    public func array<Element: Codable & Sendable>(
        _ name: String? = nil, typecode: String, size: Int, of elementType: Element.Type
    ) async throws -> ArrayProxy<Element> {
        let options: WireValue = ["typecode": .string(typecode), "size": .integer(Int64(size))]
        return ArrayProxy(handle: try await make(.array, name, options))
    }

    /// A live proxy for a reference received from the manager (a proxy stored in a shared
    /// container, or passed to this process), as Python unpickles a proxy.
    public func dict<Key: Codable & Hashable & Sendable, Value: Codable & Sendable>(
        _ reference: ObjectRef, _ keyType: Key.Type, _ valueType: Value.Type
    ) throws -> DictProxy<Key, Value> {
        DictProxy(handle: try attach(reference, .dict))
    }

    /// A live list proxy for a received reference.
    public func list<Element: Codable & Sendable>(_ reference: ObjectRef, _ elementType: Element.Type) throws -> ListProxy<Element> {
        ListProxy(handle: try attach(reference, .list))
    }

    /// A live set proxy for a received reference.
    public func set<Element: Codable & Hashable & Sendable>(_ reference: ObjectRef, _ elementType: Element.Type) throws -> SetProxy<Element> {
        SetProxy(handle: try attach(reference, .set))
    }

    /// A live Namespace proxy for a received reference.
    public func namespace(_ reference: ObjectRef) throws -> NamespaceProxy {
        NamespaceProxy(handle: try attach(reference, .namespace))
    }

    func attach(_ reference: ObjectRef, _ type: ObjectType) throws -> ProxyHandle {
        guard reference.type == type else {
            throw RemoteError(.wrongType, "the reference is to a \(reference.type), not a \(type)")
        }
        return ProxyHandle(manager: self, reference: reference)
    }

    /// Removes a named object for every client.
    @discardableResult
    public func delete(_ name: String) async throws -> Bool {
        try await connection.call(.delete(name: name)).boolValue ?? false
    }

    /// The manager's objects, sessions and counters (`colony status`).
    public func status() async throws -> WireValue {
        try await connection.call(.status)
    }

    /// Sends all `requests` at once, without waiting between them (pipelining), and returns
    /// each answer or error in order. Unlike `batch`, each is a separate request.
    public func pipeline(_ requests: [Request]) async throws -> [Result<WireValue, any Error>] {
        guard isConnected else { throw ConnectionError("the connection to the manager is closed; reconnect with Manager.connect") }
        return await connection.sendAll(requests)
    }

    /// Runs several calls in one round trip (none may block). Each element is the answer or
    /// the error of one request, in order.
    public func batch(_ requests: [Request]) async throws -> [Result<WireValue, RemoteError>] {
        let answer = try await connection.call(.batch(requests))
        guard let outcomes = answer.arrayValue else { throw ConnectionError("malformed batch answer") }
        return try outcomes.map { outcome in
            switch try BatchOutcome(wireValue: outcome) {
            case .success(let value): .success(value)
            case .failure(let error): .failure(error)
            }
        }
    }
}

func wire<T: Encodable>(_ value: T) throws -> WireValue { try WireValueEncoder().encode(value) }

/// Where and how a manager was reached: what a proxy passed to a child process carries, so
/// that the child connects by itself. It holds the authkey, which a child inherits anyway (as
/// in Python); it only travels through the child's private start-up pipe.
struct ManagerAddress: Codable, Hashable, Sendable {
    var host: String
    var port: Int
    var authKey: [UInt8]
    var trustKind: String
    var trustPath: String?
    var clientCertificatePath: String?
    var clientKeyPath: String?
    var serverName: String
    var timeoutSeconds: Double
    var busyPollNanoseconds: UInt64
    /// Set when the manager is reached over its Unix domain socket.
    var unixSocketPath: String?

    init(
        host: String, port: Int, authKey: [UInt8], trust: ManagerTrust, clientCertificate: ClientCertificate?, serverName: String,
        timeoutSeconds: Double, busyPoll: Duration
    ) {
        self.host = host
        self.port = port
        self.authKey = authKey
        switch trust {
        case .certificateAuthority(let path): (trustKind, trustPath) = ("ca", path)
        case .stateDirectory(let path): (trustKind, trustPath) = ("state", path)
        case .insecurePlaintext: (trustKind, trustPath) = ("plaintext", nil)
        }
        clientCertificatePath = clientCertificate?.certificatePath
        clientKeyPath = clientCertificate?.privateKeyPath
        self.serverName = serverName
        self.timeoutSeconds = timeoutSeconds
        // Checked to lie in 0...1 s by `connect`.
        busyPollNanoseconds = UInt64(busyPoll.components.seconds) * 1_000_000_000 + UInt64(busyPoll.components.attoseconds / 1_000_000_000)
    }

    var trust: ManagerTrust {
        switch (trustKind, trustPath) {
        case ("ca", let path?): .certificateAuthority(path: path)
        case ("state", let path?): .stateDirectory(path: path)
        default: .insecurePlaintext
        }
    }
}

extension Manager {
    private static let transferLock = Threading.Lock()
    nonisolated(unsafe) private static var transferred: [ManagerAddress: Manager] = [:]

    /// The connection this process keeps to the manager at `address`, made on first use
    /// (blocking: it runs while a child process decodes its arguments).
    static func transferred(to address: ManagerAddress) throws -> Manager {
        try transferLock.withLock { () throws -> Manager in
            if let existing = transferred[address], existing.isConnected { return existing }
            let result = Future<Manager>()
            Task.detached {
                do {
                    let certificate = address.clientCertificatePath.map {
                        ClientCertificate(certificatePath: $0, privateKeyPath: address.clientKeyPath ?? "")
                    }
                    let busyPoll = Duration.nanoseconds(Int64(address.busyPollNanoseconds))
                    if let path = address.unixSocketPath {
                        try result.setResult(
                            try await Manager.connect(unixSocket: path, authKey: address.authKey, timeoutSeconds: address.timeoutSeconds, busyPoll: busyPoll))
                    } else {
                        try result.setResult(
                            try await Manager.connect(
                                host: address.host, port: address.port, authKey: address.authKey, trust: address.trust,
                                clientCertificate: certificate, serverName: address.serverName, timeoutSeconds: address.timeoutSeconds,
                                busyPoll: busyPoll))
                    }
                } catch {
                    try? result.setException(error)
                }
            }
            let manager = try result.result(timeout: address.timeoutSeconds + 5)
            transferred[address] = manager
            return manager
        }
    }
}

extension CodingUserInfoKey {
    /// The `Manager` a decoded value arrived from: proxies inside it decode as live proxies.
    public static let colonyManager = CodingUserInfoKey(rawValue: "colony.manager")!
}

/// One reference a client holds to a shared object; released (for anonymous objects, freed)
/// when the last proxy copy using it goes away.
final class ProxyHandle: @unchecked Sendable {
    let manager: Manager
    let reference: ObjectRef

    init(manager: Manager, reference: ObjectRef) {
        self.manager = manager
        self.reference = reference
        manager.connection.references.opened(reference.id)
    }

    deinit {
        guard let seen = manager.connection.references.closed(reference.id), manager.connection.isOpen else { return }
        manager.connection.sendIgnoringAnswer(.release(object: reference.id, seen: seen))
    }

    func run<Response>(_ call: ObjectCall<Response>) async throws -> Response {
        try await run(call, cancellable: false)
    }

    /// For methods that may park on the manager: cancelling the task cancels the call there.
    func wait<Response>(_ call: ObjectCall<Response>) async throws -> Response {
        try await run(call, cancellable: true)
    }

    private func run<Response>(_ call: ObjectCall<Response>, cancellable: Bool) async throws -> Response {
        let request = call.request(object: reference.id)
        let connection = manager.connection
        if call.readsBody { return try call.decode(body: try await connection.callForBody(request, cancellable: cancellable)) }
        return try call.decode(try await cancellable ? connection.callCancellable(request) : connection.call(request))
    }

    /// Decodes a value this proxy received; proxies inside it come alive on this manager.
    func decode<T: Decodable>(_ type: T.Type, _ value: WireValue) throws -> T {
        try WireValueDecoder(userInfo: [.colonyManager: manager]).decode(type, from: value)
    }

    func runBlocking<Response>(_ call: ObjectCall<Response>) throws -> Response {
        let request = call.request(object: reference.id)
        if call.readsBody { return try call.decode(body: try manager.connection.callForBodyBlocking(request)) }
        return try call.decode(try manager.connection.callBlocking(request))
    }
}

/// What every proxy shares: identity (two proxies of one object are equal) and its reference.
public protocol Proxy: Hashable, Sendable {
    var reference: ObjectRef { get }
}

extension Proxy {
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.reference == rhs.reference }
    public func hash(into hasher: inout Hasher) { hasher.combine(reference) }
}

extension Manager {
    /// A Swift `TaskExecutor` that runs tasks on this connection's event-loop thread. Calls
    /// made from a task that prefers it skip two thread hand-offs (to the event loop and back),
    /// which on small machines costs more than the network round trip:
    ///
    ///     try await withTaskExecutorPreference(manager.executor) { try await d.set("k", 1) }
    ///
    /// Never block inside such a task: it would stop the connection's I/O.
    public var executor: any TaskExecutor { EventLoopTaskExecutor(poller: connection.poller) }
}

/// Runs Swift concurrency jobs on a NIO event loop (through its busy poller, which stops
/// polling for them).
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let poller: BusyPoller

    init(poller: BusyPoller) { self.poller = poller }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        poller.execute { job.runSynchronously(on: executor) }
    }
}

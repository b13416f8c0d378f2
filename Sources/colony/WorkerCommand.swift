import ArgumentParser
import Colony
import ColonyWire
import ColonyWorker
import Foundation

/// `colony worker`: a worker node of a manager's pool, with the stock tasks.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Join a manager's pool as a worker node and run its tasks.",
        discussion: """
            Runs the stock tasks (exec, echo, sleep, sha256, fail, exit) in N worker processes (or \
            threads with --threads). For tasks of your own, build a worker program that registers \
            them in a TaskRegistry and calls WorkerNode (see README). SIGINT or SIGTERM drains: \
            the node finishes what it holds, takes nothing new, and leaves.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The manager as HOST:PORT (instead of --host and --port), or unix:PATH for its Unix domain socket.")
    var connect: String?

    @Option(help: "Worker processes running tasks at once. Default: the CPU count.")
    var processes: Int?

    @Option(help: "Run tasks on this many threads of the node instead of processes (no isolation, no start-up cost).")
    var threads: Int?

    @Option(help: "The named pool to join.")
    var pool = WorkerHello.defaultPool

    @Option(help: "This node's name in colony status. Default: host name and process id.")
    var node: String?

    @Option(help: "Seconds between heartbeats; the manager loses a node silent for three.")
    var heartbeat = 5.0

    @Option(help: "Assignments held per process (one running, the rest waiting here); beyond one waiting, used only while tasks are quick.")
    var prefetch = 64

    @Option(help: "Replace a worker process after it has run this many calls (Python's maxtasksperchild).")
    var maxtasksperchild: Int?

    @Option(help: "A registered initializer run once in each worker process before its first task.")
    var initializer: String?

    @Option(help: "The initializer's arguments, as JSON.")
    var initializerArgs: String?

    func validate() throws {
        if processes != nil && threads != nil { throw ValidationError("give --processes or --threads, not both") }
        if let count = processes ?? threads, !(1...4096).contains(count) {
            throw ValidationError("--processes and --threads take 1 to 4096, not \(count)")
        }
        guard heartbeat > 0, heartbeat <= 3600 else { throw ValidationError("--heartbeat takes 0 to 3600 seconds, not \(heartbeat)") }
        guard (1...256).contains(prefetch) else { throw ValidationError("--prefetch takes 1 to 256, not \(prefetch)") }
        if let maximum = maxtasksperchild, maximum < 1 { throw ValidationError("--maxtasksperchild takes a positive number") }
        if let connect, !connect.hasPrefix("unix:") { _ = try Self.split(connect) }
        if connect == "unix:" { throw ValidationError("--connect unix:PATH needs the socket's path") }
    }

    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port)
        else { throw ValidationError("--connect takes HOST:PORT, not '\(address)'") }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func run() async throws {
        var host = connection.host
        var port = connection.port
        var unixSocketPath = connection.unix
        if let connect {
            if connect.hasPrefix("unix:") { unixSocketPath = String(connect.dropFirst("unix:".count)) } else { (host, port) = try Self.split(connect) }
        }
        let (trust, key, certificate) = try connection.credentials()
        var options = WorkerOptions(host: host, port: port, authKey: key, trust: trust)
        options.unixSocketPath = unixSocketPath
        options.clientCertificate = certificate
        options.pool = pool
        options.processes = threads ?? processes ?? cpuCount()
        options.useThreads = threads != nil
        if let node { options.node = node }
        options.heartbeat = .nanoseconds(Int64(heartbeat * 1e9))
        options.prefetch = prefetch
        options.maxTasksPerChild = maxtasksperchild
        options.initializer = initializer
        if let initializerArgs {
            let json = try JSONSerialization.jsonObject(with: Data(initializerArgs.utf8), options: [.fragmentsAllowed])
            options.initializerArguments = try WireValue(json: json)
        }
        let worker = try WorkerNode(options: options, registry: .stock)
        Task {
            await waitForTerminationSignal()
            worker.drain()
        }
        try await worker.run()
    }
}

extension WireValue {
    /// A value from parsed JSON (for command-line arguments).
    init(json: Any) throws {
        switch json {
        case is NSNull: self = .null
        case let number as NSNumber:
            if String(cString: number.objCType) == "c" {  // how Foundation marks a JSON bool
                self = .bool(number.boolValue)
            } else if number.doubleValue.rounded() == number.doubleValue, let integer = Int64(exactly: number.doubleValue) {
                self = .int(integer)
            } else {
                self = .double(number.doubleValue)
            }
        case let text as String: self = .string(text)
        case let array as [Any]: self = .array(try array.map(WireValue.init(json:)))
        case let object as [String: Any]:
            self = .map(try object.keys.sorted().map { WirePair(.string($0), try WireValue(json: object[$0]!)) })
        default: throw ValidationError("cannot use \(json) as an argument")
        }
    }
}

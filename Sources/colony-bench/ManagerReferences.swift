import Colony
import Foundation

/// The round-trip floor of this machine: 64-byte messages bounced over loopback TCP between
/// two threads with blocking sockets.
enum PingPongFloor {
    /// Round trips per second of 64-byte messages between two threads over loopback TCP. With
    /// `busyPolling`, both ends poll with non-blocking reads instead of sleeping in `recv`: the
    /// floor of a design that busy-polls, as Colony does by default.
    static func measure(seconds: Double, busyPolling: Bool = false) -> Double {
        let flags = busyPolling ? Int32(MSG_DONTWAIT) : 0
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = bindLoopback(listener)
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        listen(listener, 1)
        let echo = Colony.Thread {
            let peer = accept(listener, nil, nil)
            var one: Int32 = 1
            setsockopt(peer, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var buffer = [UInt8](repeating: 0, count: 64)
            while readFully(peer, &buffer, flags: flags) { _ = send(peer, buffer, 64, 0) }
            close(peer)
        }
        try? echo.start()
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) } }
        var buffer = [UInt8](repeating: 7, count: 64)
        let start = Date()
        var trips = 0
        while Date().timeIntervalSince(start) < seconds {
            _ = send(client, buffer, 64, 0)
            guard readFully(client, &buffer, flags: flags) else { break }
            trips += 1
        }
        let rate = Double(trips) / Date().timeIntervalSince(start)
        close(client)
        _ = try? echo.join(timeout: 5)
        close(listener)
        return rate
    }

    static func readFully(_ fd: Int32, _ buffer: inout [UInt8], flags: Int32) -> Bool {
        var got = 0
        while got < buffer.count {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, flags) }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { continue }
            if count <= 0 { return false }
            got += count
        }
        return true
    }
}

/// Binds `fd` to an ephemeral port on 127.0.0.1 and returns the bound address.
func bindLoopback(_ fd: Int32) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return address
}

/// A free loopback port (bound and released; good enough for a benchmark).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    return Int(UInt16(bigEndian: bindLoopback(fd).sin_port))
}

/// Runs a command to completion; returns its status and standard output.
@discardableResult
func runCommand(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    guard (try? process.run()) != nil else { return (-1, "cannot run \(path)") }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// `redis-benchmark` SET/GET against a `redis-server` started with TLS (or reached over its
/// Unix domain socket), same client count; with `appendfsync`, Redis keeps an append-only
/// file synced that way (Colony's `--persist` counterpart).
enum RedisReference {
    static func measure(clients: Int, seconds: Double, pipeline: Int, overUnixSocket: Bool = false, appendfsync: String? = nil) -> [String: Any] {
        guard let server = findExecutable("redis-server"), let benchmark = findExecutable("redis-benchmark"),
            let openssl = findExecutable("openssl")
        else {
            return ["unavailable": "redis-server, redis-benchmark or openssl is not installed (apt-get install redis-server redis-tools openssl)"]
        }
        let directory = NSTemporaryDirectory() + "colony-bench-redis-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let made = runCommand(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
        ])
        guard made.status == 0 else { return ["unavailable": "openssl could not make a certificate: \(made.output.suffix(200))"] }
        let port = freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: server)
        let socket = directory + "/redis.sock"
        process.arguments =
            (overUnixSocket
                ? ["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700"]
                : [
                    "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--tls-cert-file", directory + "/cert.pem",
                    "--tls-key-file", directory + "/key.pem", "--tls-ca-cert-file", directory + "/cert.pem", "--tls-auth-clients", "no",
                ]) + ["--save", "", "--io-threads", "1", "--dir", directory]
            + (appendfsync.map { ["--appendonly", "yes", "--appendfsync", $0] } ?? ["--appendonly", "no"])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return ["unavailable": "redis-server did not start"] }
        defer {
            // SIGKILL: a child spawned from a thread that blocks SIGTERM inherits the mask, and
            // this throwaway server holds nothing worth a clean shutdown.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        usleep(500_000)
        let requests = max(20_000, Int(seconds * 15_000 * Double(min(clients, 6)) * (pipeline > 1 ? 20 : 1)))
        let cpuBefore = processCPUSeconds(process.processIdentifier)
        let target = overUnixSocket ? ["-s", socket] : ["--tls", "--cacert", directory + "/cert.pem", "-h", "127.0.0.1", "-p", String(port)]
        let result = runCommand(benchmark, target + [
            "-c", String(clients), "-n", String(requests), "-P", String(pipeline), "-t", "set,get", "--csv", "-q",
        ])
        let cpuAfter = processCPUSeconds(process.processIdentifier)
        var rates: [String: Double] = [:]
        for line in result.output.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count >= 2, let rate = Double(fields[1]) { rates[fields[0]] = rate }
        }
        guard let set = rates["SET"], let get = rates["GET"] else {
            return ["unavailable": "redis-benchmark failed: \(result.output.suffix(300))"]
        }
        return [
            "ops_per_s": (set + get) / 2, "set_per_s": set, "get_per_s": get, "pipeline": pipeline, "clients": clients,
            "appendfsync": appendfsync ?? "off (appendonly no)",
            "server_cpu_us_per_op": (cpuAfter - cpuBefore) * 1e6 / Double(2 * requests),
        ]
    }
}

func processCPUSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPython's `multiprocessing.managers.SyncManager` with the same client count (no TLS:
/// Python's managers have none): `dict` set/get, `queue` put/get (producers and consumers on
/// different connections from two clients up), `lock` (each client its own) and
/// `lock_contended` (one lock for all) acquire/release. Every put, get, acquire, release,
/// set or get counts as one operation.
enum CPythonManagerReference {
    static func measure(workload: String, clients: Int, seconds: Double) -> [String: Any] {
        switch runPythonReference(script: script, arguments: [workload, String(clients), String(seconds)]) {
        case .success(let figures): return figures
        case .failure(let unavailable): return ["unavailable": unavailable.reason]
        }
    }

    static let script = #"""
import json, os, queue, sys, threading, time
from multiprocessing import Process, Queue
from multiprocessing.managers import SyncManager, DictProxy, AcquirerProxy, BaseProxy

workload, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

class BenchManager(SyncManager):
    pass

shared_dict, shared_lock = {}, threading.Lock()
queues = {}
def queue_named(name):
    return queues.setdefault(name, queue.Queue(1000))

BenchManager.register("bench_dict", callable=lambda: shared_dict, proxytype=DictProxy)
BenchManager.register("bench_lock", callable=lambda: shared_lock, proxytype=AcquirerProxy)
BenchManager.register("bench_queue", callable=queue_named)

def client(address, authkey, index, results):
    # A client that fails says so, so that the driver does not wait for it.
    try:
        run_client(address, authkey, index, results)
    except Exception as error:
        results.put(f"client {index}: {type(error).__name__}: {error}")

def run_client(address, authkey, index, results):
    manager = BenchManager(address=address, authkey=authkey)
    manager.connect()
    ops = 0
    if workload == "dict":
        d = manager.bench_dict()
        results.put(0)
        key = f"client-{index}"
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            d[key] = ops
            d[key]
            ops += 2
    elif workload.startswith("lock"):
        lock = manager.bench_lock() if workload == "lock_contended" else manager.Lock()
        results.put(0)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            lock.acquire()
            lock.release()
            ops += 2
    else:
        half = clients // 2
        if clients == 1:
            q = manager.bench_queue(f"q{index}")
            results.put(0)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                q.put(ops)
                q.get()
                ops += 2
        elif index < 2 * half:
            q = manager.bench_queue(f"pair{index % half}")
            results.put(0)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                try:
                    if index < half:
                        q.put(0, timeout=0.5)
                    else:
                        q.get(timeout=0.5)
                    ops += 1
                except (queue.Full, queue.Empty):
                    pass
        else:
            results.put(0)
    results.put(ops)

if __name__ == "__main__":
    manager = BenchManager(address=("127.0.0.1", 0), authkey=b"colony-bench")
    manager.start()
    results = Queue()
    processes = [Process(target=client, args=(manager.address, b"colony-bench", i, results), daemon=True) for i in range(clients)]
    for p in processes:
        p.start()

    def collect(within):
        # One report from every client, all within `within` seconds.
        deadline, values = time.monotonic() + within, []
        while len(values) < clients:
            value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(value, str):
                raise RuntimeError(value)
            values.append(value)
        return values

    try:
        collect(60)
        start = time.perf_counter()
        total = sum(collect(seconds + 60))
    except (queue.Empty, RuntimeError) as error:
        for p in processes:
            p.kill()
        print(f"a CPython client did not report: {error or 'timed out'}", file=sys.stderr)
        manager.shutdown()
        os._exit(1)
    elapsed = time.perf_counter() - start
    for p in processes:
        p.join()
    manager.shutdown()
    print(json.dumps({"ops_per_s": total / max(elapsed, seconds), "clients": clients}))
"""#
}

import ArgumentParser
import ColonyObservability
import ColonyServer
import ColonyWire
import Foundation
import NIOCore

/// `colony-bench session`: the manager's own per-request cost, with no socket, TLS or event
/// loop: request frames are fed to a `ManagerSession` and its answers encoded into bytes, as
/// the NIO shell does. What `colony-bench manager` measures on top of this is NIO, TLS and
/// the kernel.
struct SessionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Requests per second through the manager's session logic alone (dict set/get, no I/O).")

    @Option(help: "Seconds to measure.")
    var seconds = 2.0

    @Flag(help: "Also measure with the request metrics `colony manager --http-listen` keeps (swift-prometheus), alternating rounds with and without, and report the best of each and their ratio.")
    var metrics = false

    func validate() throws {
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
    }

    final class Context: ManagerContext, @unchecked Sendable {
        let store = ObjectStore()
        func statusReport() -> WireValue { [:] }
    }

    final class Outlet: AnswerOutlet, @unchecked Sendable {
        func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) {}
    }

    func run() throws {
        guard metrics else {
            let served = try measure(meter: nil, seconds: seconds)
            print(jsonLine([
                "benchmark": "session", "workload": "dict_set_get", "requests": served.requests, "seconds": served.elapsed,
                "ops_per_s": served.opsPerSecond, "us_per_request": served.elapsed * 1e6 / Double(served.requests),
            ]))
            return
        }
        // Rounds alternate so that the machine's drift hits both alike; the best of each is
        // the least disturbed.
        let meter = RequestMeter(metrics: PrometheusExporter().metrics)
        var bare: [Double] = []
        var metered: [Double] = []
        for _ in 0..<5 {
            bare.append(try measure(meter: nil, seconds: seconds / 5).opsPerSecond)
            metered.append(try measure(meter: meter, seconds: seconds / 5).opsPerSecond)
        }
        let (best, bestMetered) = (bare.max()!, metered.max()!)
        print(jsonLine([
            "benchmark": "session", "workload": "dict_set_get", "seconds": seconds, "rounds": 5,
            "ops_per_s": bestMetered, "us_per_request": 1e6 / bestMetered, "metrics": true,
            "compare": ["without_metrics_ops_per_s": best, "without_metrics_us_per_request": 1e6 / best],
            "ratio": ["vs_without_metrics": bestMetered / best],
            "metrics_cost_ns_per_request": (1e9 / bestMetered) - (1e9 / best),
        ]))
    }

    /// Feeds pipelined dict set/get requests to one session for `seconds`.
    func measure(meter: RequestMeter?, seconds: Double) throws -> (requests: Int, elapsed: Double, opsPerSecond: Double) {
        let context = Context()
        let configuration = HandshakeConfiguration(authKey: try AuthKey(Array(repeating: UInt8(7), count: 32)), failureDelayNanoseconds: 0)
        var session = ManagerSession(
            id: 1, context: context, handshake: configuration, maxFrameBody: Frame.defaultMaxBodySize, maxMessageSize: 1 << 26,
            maxInFlight: 4096, outlet: Outlet(), meter: meter, now: 0)
        var client = ClientHandshake(configuration: configuration)
        var toServer = [client.start(now: 0)]
        while let frame = toServer.popLast() {
            for case .send(let reply) in session.receive(frame, now: 1) {
                if case .send(let frames) = client.receive(reply, now: 1) { toServer += frames }
            }
        }
        var dict: UInt64 = 0
        for case .answer(_, .success(let value)) in session.receive(
            Frame(kind: .request, requestID: 1, value: Request.new(type: .dict, name: "bench", options: .null).wireValue), now: 2)
        {
            dict = value.objectRefValue?.id ?? 0
        }
        // One read's worth of pipelined requests, as the manager would receive them.
        var requests = ByteBuffer()
        for i in 0..<100 {
            let request =
                i % 2 == 0
                ? DictCall.setItem(.string("p-\(i)"), .integer(i)).request(object: dict)
                : DictCall.getItem(.string("p-\(i - 1)")).request(object: dict)
            requests.writeFrame(kind: .request, requestID: UInt64(i + 2), value: request.wireValue)
        }
        var answers = ByteBuffer()
        var stream = FrameStream()
        var served = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            for _ in 0..<100 {
                try stream.receive(requests, maxBodySize: Frame.defaultMaxBodySize) { frame in
                    for action in session.receive(frame, now: 3) {
                        if case .answer(let id, let result) = action {
                            answers.writeAnswer(requestID: id, result, maxFrameBody: Frame.defaultMaxBodySize)
                        }
                    }
                    served += 1
                    return true
                }
                answers.clear()
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        return (served, elapsed, Double(served) / elapsed)
    }
}

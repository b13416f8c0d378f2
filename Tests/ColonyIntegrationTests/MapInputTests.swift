@testable import Colony
import ColonyWire
import Testing

/// How a long map's input is cut into its `map` request and `feed`s, encoded a piece at a
/// time: every call arrives once, in order, whatever the kind of input.
@Suite struct MapInputTests {
    /// The calls of every request of `input`, in order, read back as the manager reads them.
    private func sentCalls(_ input: Pool.MapInput) throws -> (methods: [String], calls: [WireValue]) {
        var methods: [String] = []
        var calls: [WireValue] = []
        for index in 0..<input.requestCount {
            let request = try #require(PoolCallsRequest(body: input.request(index, job: 7 << 32 | 1, pool: 3), limits: .default))
            methods.append(request.method)
            calls += request.calls.values
        }
        return (methods, calls)
    }

    @Test func aLongInputArrivesWholeAndInOrderWhateverItsKind() throws {
        let count = 2 * Pool.MapInput.piece + 5
        let range = 5..<(5 + count)
        let inputs: [(Pool.MapCalls, [WireValue])] = [
            (try Pool.calls(range), range.map { .integer($0) }),
            (try Pool.calls(ClosedRange(range)), range.map { .integer($0) }),
            (try Pool.calls(Array(range)), range.map { .integer($0) }),
            (try Pool.calls(range.map { "s\($0)" }), range.map { .string("s\($0)") }),
            (try Pool.calls(range.map { Double($0) / 2 }), range.map { .double(Double($0) / 2) }),
            (try Pool.calls(range.map { [$0] }), range.map { [.integer($0)] }),
        ]
        for (calls, expected) in inputs {
            let input = Pool.MapInput(task: "echo", calls: calls, chunksize: nil, starred: false)
            #expect(input.isStreamed)
            let (methods, sent) = try sentCalls(input)
            #expect(methods == ["map", "feed", "feed"])
            #expect(sent == expected)
        }
        let short = Pool.MapInput(task: "echo", calls: try Pool.calls(0..<10), chunksize: nil, starred: false)
        let (methods, sent) = try sentCalls(short)
        #expect(methods == ["map"])
        #expect(sent == (0..<10).map { .integer($0) })
    }

    @Test func theMapLeavesFirstAndAtMostOneWindowIsInFlight() throws {
        func rounds(calls: Int) throws -> [[Range<Int>]] {
            try Pool.MapInput(task: "echo", calls: Pool.calls(0..<calls), chunksize: nil, starred: false).rounds()
        }
        #expect(try rounds(calls: 10) == [[0..<1]])
        #expect(try rounds(calls: 5 * Pool.MapInput.piece) == [[0..<1, 1..<5]])
        let long = try rounds(calls: 200 * Pool.MapInput.piece)
        #expect(long == [[0..<1, 1..<64], [64..<128], [128..<192], [192..<200]])
        #expect(long.allSatisfy { $0.reduce(0) { $0 + $1.count } <= Pool.MapInput.window }, "a round is in flight at a time")
    }
}

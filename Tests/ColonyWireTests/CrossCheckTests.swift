import ColonyWire
import Foundation
import Testing

/// Swift's bytes checked against the Python reference implementation and Python's own
/// `msgpack`. Skipped, with the reason in the output, where python3 lacks msgpack; CI runs
/// them with `COLONY_REQUIRE_PYTHON_REFERENCE=1`, so there a missing package fails them.
@Suite(PythonReference.crossCheck) struct PythonCrossCheckTests {
    @Test func pythonMsgpackAgreesWithTheVectors() throws {
        let result = try runPythonReference(["check-values", repositoryRoot.appendingPathComponent("Protocol/vectors/values.json").path])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("0 failed"))
    }

    @Test func pythonMsgpackReadsAndRewritesSwiftBytesIdentically() throws {
        // Random values, encoded by Swift; Python unpacks and repacks each; the bytes must match.
        var rng = SplitMix(seed: 2026)
        let values = (0..<300).map { _ in randomValue(&rng, allowNonStringKeys: true) }
        let encoded = values.map { hex($0.encoded()) }
        let input = try JSONSerialization.data(withJSONObject: encoded)
        let result = try runPythonReference(["repack"], input: input)
        #expect(result.status == 0, "\(result.output.prefix(500))")
        let repacked = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String]
        #expect(repacked == encoded)
    }

    @Test func pythonReferenceProducesTheSameHandshake() throws {
        let result = try runPythonReference(["check-handshake", repositoryRoot.appendingPathComponent("Protocol/vectors/handshake.json").path])
        #expect(result.status == 0, "\(result.output)")
    }
}

@Suite struct ReferenceHarnessTests {
    @Test func aProgramThatExitsBeforeReadingItsInputEndsTheCallNotTheTestProcess() throws {
        // 4 MiB is far more than a pipe holds, so the write is still going when the reader
        // has gone: without SIGPIPE ignored, this killed the whole test process.
        let input = Data(repeating: 0x61, count: 4 << 20)
        let result = try runProcess("/bin/sh", ["-c", "exit 3"], input: input)
        #expect(result.status == 3)
        let happy = try runProcess("/bin/sh", ["-c", "exec 0<&-; echo done"], input: input)
        #expect(happy.status == 0)
        #expect(happy.output.contains("done"))
        #expect(happy.output.contains("without reading all its input"))
    }
}

import Foundation
import Testing

/// Runs `colony-examples NAME` (built next to this test bundle) and returns its output lines.
func runExample(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> (lines: [String], status: Int32) {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var executable = directory.appendingPathComponent("colony-examples")
    if !FileManager.default.fileExists(atPath: executable.path) {
        // swift test runs the bundle from <build>/debug/<Package>PackageTests.xctest
        executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("colony-examples")
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = [name]
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    // An example that hangs fails its test (killed: status 9) instead of hanging the suite.
    let watchdog = DispatchWorkItem { [pid = process.processIdentifier] in kill(pid, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    watchdog.cancel()
    let text = String(decoding: data, as: UTF8.self)
    return (text.split(separator: "\n").map(String.init), process.terminationStatus)
}

@Suite(.serialized) struct ChapterExampleTests {
    @Test func eventReleasesEveryRunner() throws {
        let (lines, status) = try runExample("event")
        #expect(status == 0)
        #expect(lines.filter { $0 == "starting" }.count == 10)
        #expect(lines.filter { $0 == "waiting" }.count == 10)
        #expect(lines.filter { $0.hasPrefix("running at ") }.count == 10)
        #expect(lines.count == 30)
    }

    @Test func barrierReleasesAllAfterTheLastArrivesAndRunsTheActionOnce() throws {
        let (lines, status) = try runExample("barrier")
        #expect(status == 0)
        let releasing = try #require(lines.firstIndex(of: "releasing"))
        #expect(lines.filter { $0 == "releasing" }.count == 1)
        let waitingIndices = lines.indices.filter { lines[$0] == "waiting" }
        let runningIndices = lines.indices.filter { lines[$0].hasPrefix("running (") }
        #expect(waitingIndices.count == 10 && runningIndices.count == 10)
        #expect(waitingIndices.allSatisfy { $0 < releasing })
        #expect(runningIndices.allSatisfy { $0 > releasing })
        let numbers = runningIndices.compactMap { index -> Int? in
            let line = lines[index]
            guard let open = line.firstIndex(of: "("), let close = line.firstIndex(of: ")") else { return nil }
            return Int(line[line.index(after: open)..<close])
        }
        #expect(Set(numbers) == Set(0..<10))
    }

    @Test func threadLocalPrintsWhatThePythonProgramPrints() throws {
        let (lines, status) = try runExample("thread-local")
        #expect(status == 0)
        #expect(lines == [
            "in main thread, setting zop to 42",
            "in subthread, setting zop to 23",
            "in subthread, zop is now 23",
            "in main thread, zop is now 42",
        ])
    }

    @Test func rlockShowsOwnerAndCountOnlyInsideWith() throws {
        let (lines, _) = try runExample("rlock")
        #expect(lines.count == 3)
        #expect(lines[0] == "<unlocked RLock owner=0 count=0>")
        #expect(lines[1].hasPrefix("<locked RLock owner=") && lines[1].hasSuffix("count=1>"))
        #expect(!lines[1].contains("owner=0 "))
        #expect(lines[2] == lines[0])
    }

    @Test func periodicStopsWhenTheCallbackThrows() throws {
        let (lines, _) = try runExample("periodic")
        #expect(lines == ["tick 1", "tick 2", "tick 3", "stopped: enough ticks"])
    }

    @Test func queueEAFP() throws {
        let (lines, _) = try runExample("queue-eafp")
        #expect(lines == ["no work to perform", "working on some work"])
    }

    @Test func externalInterfacingSerializesEveryCall() throws {
        let (lines, _) = try runExample("external-interfacing")
        #expect(lines == [
            "requests: 100, correct results: 100",
            "calls reaching the resource: 100, overlapping calls: 0",
        ])
    }

    @Test func serializerRunsOneCallableAtATime() throws {
        let (lines, _) = try runExample("serializer")
        #expect(lines == ["serialized calls: 40, overlapping calls: 0, last: done"])
    }

    @Test func workerPoolAnswersEveryRequestCorrectly() throws {
        let (lines, status) = try runExample("worker-pool")
        #expect(status == 0)
        var submitted: [Int: String] = [:]
        var answered: [Int: String] = [:]
        for line in lines {
            if line.hasPrefix("Submitted request ") {
                let rest = line.dropFirst("Submitted request ".count)
                let parts = rest.split(separator: ":", maxSplits: 1)
                submitted[Int(parts[0])!] = parts[1].trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("Result ") {
                let rest = line.dropFirst("Result ".count)
                let parts = rest.split(separator: ":", maxSplits: 1)
                let id = Int(parts[0])!
                #expect(submitted[id] != nil, "result \(id) before its request")
                answered[id] = parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        #expect(submitted.count == 10)
        #expect(Set(answered.keys) == Set(submitted.keys))
        for (id, expression) in submitted {
            let parts = expression.split(separator: " ")
            let (a, op, b) = (Int(parts[0])!, String(parts[1]), Int(parts[2])!)
            let expected: String = switch op {
            case "+": String(a + b)
            case "-": String(a - b)
            case "*": String(a * b)
            case "%": String(a % b)
            default: String(Double(a) / Double(b))
            }
            #expect(answered[id] == "\(expression) -> \(expected)")
        }
    }

    @Test func makeDictWithMapAndWithAsCompleted() throws {
        let expected = ["a: aa", "bb: bbbb", "ccc: cccccc", "dddd: dddddddd", "eeeee: eeeeeeeeee", "ffffff: ffffffffffff"]
        #expect(try runExample("executor-map").lines == expected)
        #expect(try runExample("as-completed").lines == expected)
    }

    @Test func nonDaemonThreadKeepsTheProcessAliveAfterMainReturns() throws {
        let (lines, status) = try runExample("exit-waits")
        #expect(status == 0)
        #expect(lines == ["main returns", "worker finished"])
    }

    @Test func queuedCallsOfAnExecutorShutDownWithoutWaitingRunBeforeExit() throws {
        let (lines, status) = try runExample("executor-exit")
        #expect(status == 0)
        #expect(lines == ["main returns", "running call finished", "queued call ran"])
    }

    @Test func aThreadJoiningTheMainThreadReturnsOnceMainHasReturned() throws {
        let (lines, status) = try runExample("join-main")
        #expect(status == 0)
        #expect(lines == ["main returns", "main thread joined, alive: false"])
    }

    @Test func daemonThreadDoesNotKeepTheProcessAlive() throws {
        // The daemon sleeps 30 s; had exit waited for it, its line would be there.
        let (lines, status) = try runExample("daemon-exit")
        #expect(status == 0)
        #expect(lines == ["main returns"])
    }

    @Test func unknownExampleIsAClearError() throws {
        let (lines, status) = try runExample("no-such-example")
        #expect(status == 2)
        #expect(lines.isEmpty)
    }
}

@Suite(.serialized) struct ProcessExampleTests {
    @Test func processLifeCycleMatchesPython() throws {
        let (lines, status) = try runExample("process-basics")
        #expect(status == 0)
        #expect(lines.first == "MainProcess (parent ?): 9")  // run() ran it in this process
        #expect(lines.contains { $0.hasPrefix("run of an unknown target: unknownEntryPoint") })
        #expect(lines.contains("Process-1 (parent ok): 49"))
        #expect(lines.contains("Process-1 exitcode 0"))
        #expect(lines.contains("inheriting authkey as expected: true"))
        #expect(lines.contains("overridden authkey as expected: true"))
        #expect(lines.contains("exiter exitcode 3"))
        #expect(lines.contains("failing exitcode 1"))
        #expect(lines.contains("unknown target exitcode 1"))
        #expect(lines.contains("sleeper alive after join(timeout:) true, active children 1"))
        #expect(lines.contains("terminated exitcode -15"))
        #expect(lines.contains("killed exitcode -9, sentinel ready true"))
        #expect(lines.contains { $0.hasPrefix("start after close: closed") })
        #expect(lines.last == "active children 0")
    }

    @Test func theChaptersMmapIPCPairWorksBetweenTwoProcesses() throws {
        let (lines, status) = try runExample("mmap-ipc")
        #expect(status == 0)
        #expect(lines == [
            "reader saw: hello", "reader saw: mmap between processes", "reader saw: quit: that was all, goodbye", "writer exitcode 0",
        ])
    }

    @Test func sharedValuesCountEveryIncrementFromTwoProcesses() throws {
        let (lines, status) = try runExample("shared-value")
        #expect(status == 0)
        #expect(lines.first?.hasPrefix("locked value 10000, atomic value 10000, per-worker [") == true)
    }

    @Test func theSharedMemoryQueueCarriesEveryMessage() throws {
        let (lines, status) = try runExample("shared-queue")
        #expect(status == 0)
        #expect(lines == ["consumed 1000 messages, sum 499500, joined true, producer exitcode 0"])
    }

    @Test func killedChildrenLeaveNoDeadlockAndNoLostOrRepeatedMessages() throws {
        let (lines, status) = try runExample("process-crashes")
        #expect(status == 0)
        #expect(lines == [
            "holder has the lock: acquire without blocking false",
            "after the kill: acquired true, previous owner died true",
            "20 producers killed mid-stream: out-of-sequence messages 0",
            "10 consumers killed mid-stream: no repeats and at most the in-hand message missing: true",
        ])
    }

    @Test func aProcessBarriersActionRunsOncePerRoundBeforeAnyPartyGoesOn() throws {
        let (lines, status) = try runExample("process-barrier")
        #expect(status == 0)
        let rounds = lines.dropLast()
        #expect(Array(rounds) == ["round complete"] + Array(repeating: "a party passed", count: 3) + ["round complete"] + Array(repeating: "a party passed", count: 3))
        #expect(lines.last == "exit codes [\"0\", \"0\"]")
    }

    @Test func theReadmeProcessExampleCountsEveryIncrement() throws {
        let (lines, status) = try runExample("readme-processes")
        #expect(status == 0)
        let line = try #require(lines.last)
        #expect(line.hasPrefix("4000 Process-") && line.hasSuffix(" done"))
    }

    @Test func exitWaitsForChildrenAndTerminatesDaemons() throws {
        let (lines, status) = try runExample("process-exit")
        #expect(status == 0)
        #expect(lines.suffix(2) == ["main returns", "non-daemon child done"])
        let pid = try #require(lines.first { $0.hasPrefix("daemon pid ") }.flatMap { Int32($0.dropFirst("daemon pid ".count)) })
        var gone = false
        for _ in 0..<100 where !gone {
            gone = kill(pid, 0) == -1 && errno == ESRCH
            if !gone { usleep(100_000) }
        }
        if !gone { kill(pid, SIGKILL) }
        #expect(gone, "the daemonic child outlived its parent")
    }
}

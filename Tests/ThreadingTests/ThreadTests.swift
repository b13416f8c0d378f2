import Testing
@testable import Threading

@Suite struct ThreadTests {
    @Test func targetRunsOnAnotherThreadAndJoinWaits() throws {
        let ran = Recorder<UInt>()
        let thread = Thread(name: "worker") { ran.append(Thread.currentIdent) }
        #expect(thread.name == "worker")
        #expect(thread.ident == nil)
        #expect(thread.nativeID == nil)
        #expect(!thread.isAlive)
        try thread.start()
        #expect(try thread.join(timeout: patience))
        #expect(!thread.isAlive)
        #expect(ran.values.count == 1)
        #expect(ran.values.first == thread.ident)
        #expect(ran.values.first != Thread.currentIdent)
        #expect(thread.nativeID != nil && thread.nativeID != Thread.currentNativeID)
        #expect(try thread.join())  // joining again is fine
    }

    @Test func subclassOverridingRun() throws {
        final class Squarer: Thread, @unchecked Sendable {
            let input: Int
            let output = Recorder<Int>()
            init(_ input: Int) {
                self.input = input
                super.init(name: "squarer")
            }
            override func run() throws { output.append(input * input) }
        }
        let thread = Squarer(7)
        try thread.start()
        try thread.join(timeout: patience)
        #expect(thread.output.values == [49])
    }

    @Test func startTwiceAndJoinErrors() throws {
        let gate = Event()
        let thread = Thread { gate.wait(timeout: patience) }
        #expect(throws: ThreadingError.self) { try thread.join() }
        try thread.start()
        #expect(thread.isAlive)
        #expect(throws: ThreadingError.self) { try thread.start() }
        #expect(throws: ThreadingError.self) { try thread.setDaemon(true) }
        #expect(try !thread.join(timeout: 0.02))
        #expect(thread.isAlive)
        gate.set()
        #expect(try thread.join(timeout: patience))
    }

    @Test func aThreadCannotJoinItself() throws {
        let outcome = Recorder<ThreadingError.Code>()
        let holder = Recorder<Thread>()
        let ready = Event()
        let thread = Thread {
            ready.wait()
            do { try holder.values[0].join() } catch let error as ThreadingError { outcome.append(error.code) }
        }
        holder.append(thread)
        try thread.start()
        ready.set()
        try joinAll([thread])
        #expect(outcome.values == [.joinCurrentThread])
    }

    @Test func currentEnumerateAndActiveCount() throws {
        let gate = Event()
        let seen = Recorder<String>()
        let thread = Thread(name: "visible") {
            seen.append(Thread.current.name)
            gate.wait(timeout: patience)
        }
        try thread.start()
        #expect(Thread.enumerate().contains { $0 === thread })
        #expect(Thread.activeCount() >= 2)
        #expect(Thread.enumerate().contains { $0 === Thread.main })
        let before = Thread.activeCount()
        gate.set()
        try thread.join(timeout: patience)
        #expect(!Thread.enumerate().contains { $0 === thread })
        #expect(Thread.activeCount() <= before - 1 + 1)
        #expect(seen.values == ["visible"])
    }

    @Test func mainThreadIsKnown() {
        let main = Thread.main
        #expect(main.name == "MainThread")
        #expect(main.isAlive)
        #expect(!main.isDaemon)
        #expect(main.ident != nil)
    }

    @Test func threadsColonyDidNotStartGetAStandIn() async throws {
        // Swift concurrency's pool threads were not started by Colony.
        let name = await Task.detached { Thread.current.name }.value
        #expect(name.hasPrefix("Dummy-") || name == "MainThread")
    }

    @Test func joiningAStandInIsAnErrorNotAWaitForever() async throws {
        // Swift concurrency's pool threads were not started by Colony.
        let code: ThreadingError.Code? = await Task.detached {
            let standIn = Thread.current
            guard standIn !== Thread.main else { return .joinDummyThread }  // the test ran on the main thread: nothing to check
            do {
                _ = try Thread.main.join(timeout: 0)  // the main thread may be joined from anywhere
            } catch {
                return nil
            }
            let joiner = Recorder<ThreadingError.Code?>()
            let thread = Thread {
                do {
                    _ = try standIn.join(timeout: 5)
                    joiner.append(nil)
                } catch let error as ThreadingError {
                    joiner.append(error.code)
                }
            }
            try? thread.start()
            _ = try? thread.join(timeout: 10)
            return joiner.values.first ?? nil
        }.value
        #expect(code == .joinDummyThread)
    }

    @Test func anEmptyNameGetsTheDefaultName() throws {
        let thread = Thread(name: "") {}
        #expect(thread.name.hasPrefix("Thread-"))
        #expect(Int(thread.name.dropFirst("Thread-".count)) != nil)
    }

    @Test func daemonFlagIsInheritedAndSettableBeforeStart() throws {
        let thread = Thread {}
        #expect(!thread.isDaemon)  // created by a non-daemon thread
        try thread.setDaemon(true)
        #expect(thread.isDaemon)
        let inherited = Recorder<Bool>()
        let parent = Thread(daemon: true) { inherited.append(Thread { }.isDaemon) }
        try parent.start()
        try joinAll([parent])
        #expect(inherited.values == [true])
    }

    @Test func generatedNamesAreDistinct() {
        let a = Thread(), b = Thread()
        #expect(a.name.hasPrefix("Thread-"))
        #expect(a.name != b.name)
    }

    @Test func stackSizeIsValidated() throws {
        #expect(throws: ThreadingError.self) { try Thread.setStackSize(1024) }
        let previous = try Thread.setStackSize(256 * 1024)
        defer { _ = try? Thread.setStackSize(previous) }
        #expect(Thread.stackSize() == 256 * 1024)
        let ran = Event()
        let thread = Thread { ran.set() }
        try thread.start()
        try joinAll([thread])
        #expect(ran.isSet)
    }

    @Test func timeoutMaxMatchesPython() {
        #expect(Thread.timeoutMax > 9_000_000_000)
        // A wait with a huge timeout behaves as "forever" rather than overflowing.
        let event = Event()
        event.set()
        #expect(event.wait(timeout: Thread.timeoutMax * 10))
    }
}

/// The excepthook is process-wide, so these tests run one at a time.
@Suite(.serialized) struct ExcepthookTests {
    @Test func errorsThrownByRunReachTheHook() throws {
        struct Failure: Error, Equatable { let code: Int }
        let caught = Recorder<String>()
        let original = Thread.excepthook
        Thread.excepthook = { arguments in
            // Other suites run meanwhile; only our thread's report counts.
            if arguments.thread.name == "failing" { caught.append("\(arguments.thread.name): \(arguments.error)") }
        }
        defer { Thread.excepthook = original }
        let thread = Thread(name: "failing") { throw Failure(code: 7) }
        try thread.start()
        try joinAll([thread])
        #expect(caught.values == ["failing: Failure(code: 7)"])
        #expect(!thread.isAlive)
    }

    @Test func periodicStopsWhenTheCallbackThrows() throws {
        struct Stop: Error {}
        let original = Thread.excepthook
        let reported = Counter()
        Thread.excepthook = { arguments in
            if arguments.thread.name == "periodic-stop" { reported.add() }
        }
        defer { Thread.excepthook = original }
        let ticks = Counter()
        let periodic = Periodic(interval: 0.002, name: "periodic-stop") {
            ticks.add()
            if ticks.value == 2 { throw Stop() }
        }
        try periodic.start()
        try joinAll([periodic])
        #expect(ticks.value == 2)
        #expect(reported.value == 1)
    }
}

@Suite struct TimerTests {
    @Test func firesOnceAfterTheInterval() throws {
        let fired = Counter()
        let timer = Timer(interval: 0.02) { fired.add() }
        #expect(timer.interval == 0.02)
        try timer.start()
        try joinAll([timer])
        #expect(fired.value == 1)
    }

    @Test func cancelBeforeItFires() throws {
        let fired = Counter()
        let timer = Timer(interval: patience) { fired.add() }
        try timer.start()
        timer.cancel()
        try joinAll([timer])
        #expect(fired.value == 0)
    }

    @Test func periodicRepeatsUntilCancelled() throws {
        let ticks = Counter()
        let enough = Event()
        let periodic = Periodic(interval: 0.005) {
            ticks.add()
            if ticks.value >= 3 { enough.set() }
        }
        try periodic.start()
        #expect(enough.wait(timeout: patience))
        periodic.cancel()
        try joinAll([periodic])
        let final = ticks.value
        #expect(final >= 3)
        _ = Event().wait(timeout: 0.03)
        #expect(ticks.value == final)
    }
}

@Suite struct ThreadLocalTests {
    @Test func eachThreadSeesItsOwnValueAsInTheChapter() throws {
        let local = ThreadLocal<Int>()
        local.value = 42
        let inThread = Recorder<Int?>()
        try joinAll([try spawn {
            inThread.append(local.value)
            local.value = 23
            inThread.append(local.value)
        }])
        #expect(inThread.values == [nil, 23])
        #expect(local.value == 42)
        local.value = nil
        #expect(local.value == nil)
    }

    @Test func initialValuePerThread() throws {
        let made = Counter()
        let local = ThreadLocal<[String]>(makeInitial: { made.add(); return [] })
        local.value?.append("main")
        #expect(local.value == ["main"])
        let seen = Recorder<[String]>()
        try joinAll([try spawn { seen.append(local.value ?? ["missing"]) }])
        #expect(seen.values == [[]])
        #expect(made.value == 2)
    }

    @Test func valuesAreReleasedWhenTheirThreadEnds() throws {
        final class Tracked: @unchecked Sendable {
            let released: Event
            init(_ released: Event) { self.released = released }
            deinit { released.set() }
        }
        let released = Event()
        let local = ThreadLocal<Tracked>()
        try joinAll([try spawn { local.value = Tracked(released) }])
        #expect(released.wait(timeout: patience))
    }
}

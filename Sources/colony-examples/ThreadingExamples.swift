import Colony

enum ThreadingExamples {
    /// The chapter's Event program.
    static func event() throws {
        let event = Event()
        let threads = (0..<10).map { _ in
            Thread {
                say("starting")
                Thread.sleep(Double(Int.random(in: 1...3)) / 100)
                say("waiting")
                event.wait()
                say("running at \(Clock.sinceStart())")
            }
        }
        for thread in threads { try thread.start() }
        event.set()
        for thread in threads { try thread.join() }
    }

    /// The chapter's Barrier program.
    static func barrier() throws {
        let barrier = try Barrier(parties: 10, action: { say("releasing") })
        let threads = (0..<10).map { _ in
            Thread {
                say("starting")
                Thread.sleep(Double(Int.random(in: 1...3)) / 100)
                say("waiting")
                let myNumber: Int
                do {
                    myNumber = try barrier.wait()
                } catch is BrokenBarrierError {
                    say("Barrier abort() or reset() called, thread exiting...")
                    return
                }
                say("running (\(myNumber)) at \(Clock.sinceStart())")
            }
        }
        for thread in threads { try thread.start() }
        for thread in threads { try thread.join() }
    }

    /// The chapter's thread-local storage program.
    static func threadLocal() throws {
        let local = ThreadLocal<Int>()
        print("in main thread, setting zop to 42")
        local.value = 42
        let thread = Thread {
            print("in subthread, setting zop to 23")
            local.value = 23
            print("in subthread, zop is now", local.value ?? 0)
        }
        try thread.start()
        try thread.join()
        print("in main thread, zop is now", local.value ?? 0)
    }

    /// The chapter's console session printing an RLock outside and inside `with lock:`.
    static func rlockSession() throws {
        let lock = RLock()
        print(lock)
        lock.withLock { print(lock) }
        print(lock)
    }

    /// The Periodic recipe: ticks until the callback throws.
    static func periodic() throws {
        struct Enough: Error, CustomStringConvertible { var description: String { "enough ticks" } }
        let ticks = Lock()
        nonisolated(unsafe) var count = 0
        let original = Thread.excepthook
        Thread.excepthook = { say("stopped: \($0.error)") }
        defer { Thread.excepthook = original }
        let periodic = Periodic(interval: 0.01) {
            let tick = ticks.withLock { count += 1; return count }
            say("tick \(tick)")
            if tick == 3 { throw Enough() }
        }
        try periodic.start()
        try periodic.join()
    }

    /// The chapter's EAFP advice: try get_nowait and handle Empty.
    static func queueEAFP() throws {
        let q = Queue<String>()
        for attempt in 0..<2 {
            if attempt == 1 { try q.put("some work") }
            do {
                let x = try q.getNowait()
                print("working on \(x)")
            } catch is QueueEmpty {
                print("no work to perform")
            }
        }
    }

    /// Python semantics at exit: main returns, the non-daemon thread still finishes.
    static func exitWaitsForThreads() throws {
        let worker = Thread(name: "slow") {
            Thread.sleep(0.2)
            say("worker finished")
        }
        try worker.start()
        say("main returns")
    }

    /// A thread that joins the main thread returns once the main program has ended, as in
    /// Python (where `threading.main_thread().join()` returns at interpreter shutdown).
    static func joinMainThread() throws {
        let watcher = Thread(name: "watcher") {
            _ = try? Thread.main.join()
            say("main thread joined, alive: \(Thread.main.isAlive)")
        }
        try watcher.start()
        say("main returns")
    }

    /// A daemon thread is stopped with the process instead of delaying exit.
    static func daemonDoesNotDelayExit() throws {
        let worker = Thread(name: "daemon", daemon: true) {
            Thread.sleep(30)
            say("daemon finished")
        }
        try worker.start()
        say("main returns")
    }
}

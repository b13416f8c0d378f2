import Colony
import Glibc

/// Programs with child processes: the Process class, the chapter's mmap IPC pair, shared
/// Values, the shared-memory queue, and what happens when a child dies holding a lock.
enum ProcessExamples {
    /// Entry points every run of colony-examples registers before `ChildProcess.bootstrap()`.
    static func registerEntryPoints() {
        ChildProcess.register("square") { (n: Int) in
            say("\(CurrentProcess.name) (parent \(CurrentProcess.parentPID.map { $0 == getppid() } == true ? "ok" : "?")): \(n * n)")
        }
        ChildProcess.register("exit-with") { (code: Int32) in exit(code) }
        ChildProcess.register("show-authkey") { (expected: [UInt8]) in
            say("\(CurrentProcess.name) authkey as expected: \(CurrentProcess.authKey == expected)")
        }
        ChildProcess.register("fail") { throw ExampleFailure(message: "the target threw") }
        ChildProcess.register("sleep") { (seconds: Double) in Thread.sleep(seconds) }
        ChildProcess.register("file-writer", FileWriter.run)
        ChildProcess.register("increment", Increments.run)
        ChildProcess.register("produce", Producer.run)
        ChildProcess.register("hold-lock", LockHolder.run)
        ChildProcess.register("produce-forever", Producer.forever)
        ChildProcess.register("consume-forever", Consumer.forever)
        ChildProcess.register("runner", ManagerExamples.runner)
        ChildProcess.register("count") { (job: CountJob) in
            for _ in 0..<1000 { try job.total.getLock()!.withLock { job.total.unlockedValue += 1 } }
            try job.results.put("\(CurrentProcess.name) done")
        }
        ProcessBarrier.registerAction("announce-round") { say("round complete") }
        ChildProcess.register("barrier-party") { (barrier: ProcessBarrier) in
            for _ in 0..<2 {
                Thread.sleep(0.05)  // so that a child, not the parent, completes the round
                try barrier.wait(timeout: 30)
                say("a party passed")
            }
        }
        ChildProcess.register("late-finisher") {
            Thread.sleep(0.2)
            say("non-daemon child done")
        }
        ChildProcess.register("quiet-daemon") {
            let null = open("/dev/null", O_WRONLY)
            dup2(null, 1)  // let go of the parent's stdout
            Thread.sleep(3600)
        }
    }

    /// The README's process example (its `main` after `bootstrap()`).
    static func readme() throws {
        let job = CountJob(total: try SharedValue<Int>(0), results: try SharedMemoryQueue())
        let workers = try (0..<4).map { _ in try ChildProcess(target: "count", arguments: job) }
        for worker in workers { try worker.start() }
        for worker in workers { try worker.join() }
        print(job.total.value, try job.results.get(String.self))  // 4000 Process-3 done (the first to finish)
    }

    struct CountJob: Codable {
        var total: SharedValue<Int>  // shared objects travel as their shared memory names
        var results: SharedMemoryQueue
    }

    /// At exit, a process waits for its non-daemonic children and terminates its daemonic ones.
    static func exitBehaviour() throws {
        let daemon = ChildProcess(target: "quiet-daemon", daemon: true)
        try daemon.start()
        try ChildProcess(target: "late-finisher").start()
        say("daemon pid \(daemon.pid!)")
        say("main returns")
    }

    struct ExampleFailure: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Python's Process table: start, join, exitcode, is_alive, terminate, kill, close, names.
    static func basics() throws {
        let square = try ChildProcess(target: "square", arguments: 7)
        try ChildProcess(target: "square", arguments: 3, name: "inline").run()  // here, not in a child
        do {
            try ChildProcess(target: "no-such-target").run()
        } catch {
            say("run of an unknown target: \(error)")
        }
        try square.start()
        try square.join()
        say("\(square.name) exitcode \(square.exitCode.map(String.init) ?? "nil")")
        let inheriting = try ChildProcess(target: "show-authkey", arguments: CurrentProcess.authKey, name: "inheriting")
        let overridden = try ChildProcess(target: "show-authkey", arguments: [UInt8](repeating: 7, count: 32), name: "overridden")
        overridden.authKey = [UInt8](repeating: 7, count: 32)
        for child in [inheriting, overridden] {
            try child.start()
            try child.join()
        }
        let exiting = try ChildProcess(target: "exit-with", arguments: Int32(3), name: "exiter")
        try exiting.start()
        try exiting.join()
        say("exiter exitcode \(exiting.exitCode!)")
        let failing = ChildProcess(target: "fail")
        try failing.start()
        try failing.join()
        say("failing exitcode \(failing.exitCode!)")
        let unknown = ChildProcess(target: "not-registered")
        try unknown.start()
        try unknown.join()
        say("unknown target exitcode \(unknown.exitCode!)")
        let sleeper = try ChildProcess(target: "sleep", arguments: 30.0)
        try sleeper.start()
        try sleeper.join(timeout: 0.05)
        say("sleeper alive after join(timeout:) \(sleeper.isAlive), active children \(ChildProcess.activeChildren().count)")
        try sleeper.terminate()
        try sleeper.join()
        say("terminated exitcode \(sleeper.exitCode!)")
        let killed = try ChildProcess(target: "sleep", arguments: 30.0)
        try killed.start()
        try killed.kill()
        _ = ChildProcess.wait(for: [killed], timeout: 10)
        say("killed exitcode \(killed.exitCode!), sentinel ready \(killed.sentinel >= 0)")
        try killed.close()
        do {
            try killed.start()
        } catch {
            say("start after close: \(error)")
        }
        say("active children \(ChildProcess.activeChildren().count)")
    }

    /// The chapter's mmap IPC pair: a child rewrites a file line by line with file I/O; this
    /// process maps the file and prints each new content it sees (`mx.resize(mx.size())`).
    static func mmapIPC() throws {
        let path = "/tmp/colony-mmap-ipc-\(getpid())"
        defer { unlink(path) }
        let create = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        _ = write(create, "-", 1)
        close(create)
        // Each line is longer than the last, so the file never shrinks under the reader's map.
        let lines = ["hello", "mmap between processes", "quit: that was all, goodbye"]
        let writer = try ChildProcess(target: "file-writer", arguments: FileWriter.Job(path: path, lines: lines))
        try writer.start()
        let mx = try MemoryMap(path: path, length: 1)
        var last: [UInt8]?
        var previousPoll: [UInt8]?
        var seen: [String] = []
        while !(seen.last ?? "").hasPrefix("quit") {
            try mx.resize(max(1, try mx.size()))
            let data = try mx.slice()
            // Print a content once it has held for two polls (not in the middle of a write).
            if data == previousPoll, data != last, data != Array("-".utf8) {
                let text = String(decoding: data, as: UTF8.self)
                say("reader saw: \(text)")
                seen.append(text)
                last = data
            }
            previousPoll = data
            Thread.sleep(0.002)
        }
        try writer.join()
        say("writer exitcode \(writer.exitCode!)")
    }

    enum FileWriter {
        struct Job: Codable {
            var path: String
            var lines: [String]
        }

        /// Like the chapter's first program: seek(0), write, truncate, flush, for each line;
        /// waits until the reader has seen one before writing the next.
        static func run(_ job: Job) throws {
            for line in job.lines {
                let file = open(job.path, O_RDWR)
                let bytes = Array(line.utf8)
                _ = pwrite(file, bytes, bytes.count, 0)
                ftruncate(file, off_t(bytes.count))
                fsync(file)
                close(file)
                Thread.sleep(0.1)
            }
        }
    }

    /// `with v.get_lock(): v.value += 1` from two processes, and the lock-free `add`.
    /// A ProcessBarrier with a registered action: children arrive last, and the action runs
    /// once per round, in whichever process completes it, before any party goes on.
    static func processBarrier() throws {
        let barrier = try ProcessBarrier(parties: 3, action: "announce-round")
        let children = try (0..<2).map { _ in try ChildProcess(target: "barrier-party", arguments: barrier) }
        for child in children { try child.start() }
        for _ in 0..<2 {
            try barrier.wait(timeout: 30)
            say("a party passed")
        }
        for child in children { try child.join(timeout: 30) }
        say("exit codes \(children.map { $0.exitCode.map(String.init) ?? "none" })")
    }

    static func sharedValue() throws {
        let locked = try SharedValue<Int>(0)
        let atomic = try SharedValue<Int>(0, lock: false)
        let totals = try SharedArray<Int>(repeating: 0, count: 2)
        let job = Increments.Job(locked: locked, atomic: atomic, totals: totals, times: 5000)
        let workers = try (0..<2).map { _ in try ChildProcess(target: "increment", arguments: job) }
        for worker in workers { try worker.start() }
        for worker in workers { try worker.join() }
        say("locked value \(locked.value), atomic value \(atomic.value), per-worker \(totals.copy())")
    }

    enum Increments {
        struct Job: Codable {
            var locked: SharedValue<Int>
            var atomic: SharedValue<Int>
            var totals: SharedArray<Int>
            var times: Int
        }

        static func run(_ job: Job) throws {
            let lock = job.locked.getLock()!
            for _ in 0..<job.times {
                try lock.withLock { job.locked.unlockedValue += 1 }
                job.atomic.add(1)
                try job.totals.add(1, at: CurrentProcess.pid % 2 == 0 ? 0 : 1)
            }
        }
    }

    /// A producer process and this process as the consumer of a JoinableQueue in shared memory.
    static func sharedQueue() throws {
        let queue = try SharedMemoryQueue(capacity: 64, maxMessageSize: 256)
        let producer = try ChildProcess(target: "produce", arguments: Producer.Job(queue: queue, count: 1000))
        try producer.start()
        var sum = 0
        for _ in 0..<1000 {
            sum += try queue.get(Message.self, timeout: 30).number
            try queue.taskDone()
        }
        try producer.join()
        say("consumed 1000 messages, sum \(sum), joined \(queue.join(timeout: 5)), producer exitcode \(producer.exitCode!)")
    }

    struct Message: Codable {
        var number: Int
        var text: String
    }

    enum Producer {
        struct Job: Codable {
            var queue: SharedMemoryQueue
            var count: Int
        }

        static func run(_ job: Job) throws {
            for number in 0..<job.count { try job.queue.put(Message(number: number, text: "message \(number)")) }
        }

        static func forever(_ queue: SharedMemoryQueue) throws {
            var number = 0
            while true {
                try queue.put(bytes: withUnsafeBytes(of: number) { Array($0) }, timeout: 30)
                number += 1
            }
        }
    }

    enum Consumer {
        struct Job: Codable {
            var queue: SharedMemoryQueue
            var received: SharedArray<Int>  // [count, items...]
        }

        static func forever(_ job: Job) throws {
            while true {
                let bytes = try job.queue.getBytes(timeout: 30)
                let number = bytes.withUnsafeBytes { $0.load(as: Int.self) }
                let count = try job.received.get(0)
                try job.received.set(count + 1, number)
                try job.received.set(0, count + 1)
            }
        }
    }

    /// A child takes a process-shared lock and is killed holding it; the next acquirer gets
    /// it and is told. Then producers and consumers of a shared queue are killed mid-stream:
    /// the queue goes on, no message is lost or repeated.
    static func crashes() throws {
        let lock = try ProcessLock()
        let ready = try ProcessEvent()
        let holder = try ChildProcess(target: "hold-lock", arguments: LockHolder.Job(lock: lock, ready: ready))
        try holder.start()
        guard ready.wait(timeout: 30) else { throw ExampleFailure(message: "the holder never took the lock") }
        say("holder has the lock: acquire without blocking \(try lock.acquire(blocking: false))")
        try holder.kill()
        try holder.join()
        let acquisition = try lock.acquireReportingDeath(timeout: 10)
        say("after the kill: acquired \(acquisition.acquired), previous owner died \(acquisition.previousOwnerDied)")
        try lock.release()

        let queue = try SharedMemoryQueue(capacity: 16, maxMessageSize: 8)
        var expected = 0
        var repeatedOrLost = 0
        for round in 0..<20 {
            let producer = try ChildProcess(target: "produce-forever", arguments: queue)
            try producer.start()
            // Drain while it produces, then kill it at an arbitrary moment.
            let until = Double(round % 5 + 1) * 0.003
            let start = monotonicNow()
            while monotonicNow() - start < until {
                if let bytes = try? queue.getBytes(timeout: 0.01) {
                    let number = bytes.withUnsafeBytes { $0.load(as: Int.self) }
                    if number != expected { repeatedOrLost += 1 }
                    expected = number + 1
                }
            }
            try producer.kill()
            try producer.join()
            while let bytes = try? queue.getBytes(block: false) {
                let number = bytes.withUnsafeBytes { $0.load(as: Int.self) }
                if number != expected { repeatedOrLost += 1 }
                expected = number + 1
            }
            expected = 0  // the next producer counts from zero
        }
        say("20 producers killed mid-stream: out-of-sequence messages \(repeatedOrLost)")

        var consumersOK = true
        for _ in 0..<10 {
            let received = try SharedArray<Int>(repeating: -1, count: 202)
            try received.set(0, 0)
            let stream = try SharedMemoryQueue(capacity: 256, maxMessageSize: 8)
            for number in 0..<200 { try stream.put(bytes: withUnsafeBytes(of: number) { Array($0) }) }
            let consumer = try ChildProcess(target: "consume-forever", arguments: Consumer.Job(queue: stream, received: received))
            try consumer.start()
            Thread.sleep(0.002)
            try consumer.kill()
            try consumer.join()
            let taken = received.copy()
            let count = taken[0]
            var seen = Array(taken[1..<(1 + count)])
            while let bytes = try? stream.getBytes(block: false) { seen.append(bytes.withUnsafeBytes { $0.load(as: Int.self) }) }
            // At most the one message the consumer got but had not yet recorded is missing.
            if Set(seen).count != seen.count || seen.count < 199 || !Set(seen).isSubset(of: Set(0..<200)) { consumersOK = false }
        }
        say("10 consumers killed mid-stream: no repeats and at most the in-hand message missing: \(consumersOK)")
    }

    enum LockHolder {
        struct Job: Codable {
            var lock: ProcessLock
            var ready: ProcessEvent
        }

        static func run(_ job: Job) throws {
            try job.lock.acquire()
            job.ready.set()
            Thread.sleep(3600)
        }
    }

    static func monotonicNow() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

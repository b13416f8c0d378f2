import Atomics
import CMemoryMapShim
import Glibc
import Threading

/// A named block of shared memory (Python `multiprocessing.shared_memory.SharedMemory`):
/// any process that opens the same name maps the same bytes. It lives in `/dev/shm`; the
/// process that created it removes the name when its `SharedMemory` goes away (or at
/// `unlink()`), after which processes that already opened it keep their mapping.
public final class SharedMemory: @unchecked Sendable {
    /// The name other processes open it by.
    public let name: String
    /// Its size in bytes.
    public let size: Int
    /// Whether this process created it (and so removes its name).
    public let isCreator: Bool
    let map: MemoryMap
    /// Where it is mapped in this process.
    public let baseAddress: UnsafeMutableRawPointer

    private static func path(_ name: String) -> String { "/dev/shm/" + name }

    /// A fresh unique name: `colony-PID-RANDOM`.
    static func uniqueName() -> String {
        "colony-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
    }

    /// Python `SharedMemory(name, create=True, size)`: creates a new block of `size` zero
    /// bytes, under a fresh unique name unless one is given (which must not exist yet).
    public init(creating size: Int, name: String? = nil) throws(MemoryMapError) {
        guard size > 0 else { throw MemoryMapError(.invalidArgument, "shared memory needs a positive size") }
        let name = name ?? SharedMemory.uniqueName()
        try SharedMemory.check(name)
        let descriptor = Glibc.open(SharedMemory.path(name), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw MemoryMapError.system("creating shared memory '\(name)'") }
        defer { Glibc.close(descriptor) }
        guard ftruncate(descriptor, off_t(size)) == 0 else {
            let error = MemoryMapError.system("sizing shared memory '\(name)'")
            Glibc.unlink(SharedMemory.path(name))
            throw error
        }
        do {
            map = try MemoryMap(fileDescriptor: descriptor, length: size)
        } catch {
            Glibc.unlink(SharedMemory.path(name))
            throw error
        }
        self.name = name
        self.size = size
        isCreator = true
        baseAddress = map.baseAddress!
    }

    /// Python `SharedMemory(name)`: opens an existing block.
    public init(opening name: String) throws(MemoryMapError) {
        try SharedMemory.check(name)
        let descriptor = Glibc.open(SharedMemory.path(name), O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw MemoryMapError(.system, "no shared memory named '\(name)' (its creator may have exited)", errno: errno)
        }
        defer { Glibc.close(descriptor) }
        map = try MemoryMap(fileDescriptor: descriptor)
        self.name = name
        size = try map.count
        isCreator = false
        baseAddress = map.baseAddress!
    }

    private static func check(_ name: String) throws(MemoryMapError) {
        guard !name.isEmpty, name.count < 200, !name.contains("/"), name != ".", name != ".." else {
            throw MemoryMapError(.invalidArgument, "a shared memory name is 1 to 200 characters without '/'")
        }
    }

    /// Python `shm.buf`.
    public var buffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: baseAddress, count: size) }

    /// Python `shm.unlink()`: removes the name now; existing mappings stay valid.
    public func unlink() { Glibc.unlink(SharedMemory.path(name)) }

    deinit {
        if isCreator { unlink() }
    }
}

/// The header every process-shared object starts with, so that opening a block as the
/// wrong kind of object is an error instead of memory corruption.
struct SharedHeader {
    static let size = 64
    static let magic: UInt32 = 0x434C_4E59  // "CLNY"

    /// Writes the header of a new object at the start of `memory`.
    static func write(_ memory: SharedMemory, kind: UInt32, detail: UInt64) {
        write(memory.baseAddress, kind: kind, detail: detail)
    }

    static func write(_ address: UnsafeMutableRawPointer, kind: UInt32, detail: UInt64) {
        address.storeBytes(of: magic, as: UInt32.self)
        address.storeBytes(of: kind, toByteOffset: 4, as: UInt32.self)
        address.storeBytes(of: detail, toByteOffset: 8, as: UInt64.self)
    }

    /// Checks an opened object's header; returns its detail word.
    static func check(_ memory: SharedMemory, kind: UInt32, what: String) throws(MemoryMapError) -> UInt64 {
        try check(memory.baseAddress, size: memory.size, name: memory.name, kind: kind, what: what)
    }

    static func check(_ address: UnsafeMutableRawPointer, size available: Int, name: String, kind: UInt32, what: String) throws(MemoryMapError)
        -> UInt64
    {
        guard available >= size, address.load(as: UInt32.self) == magic, address.load(fromByteOffset: 4, as: UInt32.self) == kind
        else { throw MemoryMapError(.wrongType, "shared memory '\(name)' does not hold a \(what)") }
        return address.load(fromByteOffset: 8, as: UInt64.self)
    }
}

/// A deadline on CLOCK_MONOTONIC in nanoseconds; 0 means none.
func monotonicDeadline(_ timeout: Double?) -> UInt64 {
    guard let timeout else { return 0 }
    return colony_monotonic_ns() &+ UInt64(max(0, min(timeout, 1e9)) * 1e9) | 1
}

/// A robust, process-shared pthread mutex at a fixed place in shared memory. If its owner
/// dies holding it, the next locker gets it and is told.
struct SharedMutex {
    static let size = (MemoryLayout<pthread_mutex_t>.size + 63) / 64 * 64
    let pointer: UnsafeMutableRawPointer

    func initialize(recursive: Bool) throws(MemoryMapError) {
        let rc = colony_robust_mutex_init(pointer, recursive ? 1 : 0)
        guard rc == 0 else { throw MemoryMapError(.system, "pthread_mutex_init failed (errno \(rc))", errno: rc) }
    }

    /// Locks; nil if not acquired (not blocking, or the deadline passed), else whether the
    /// previous owner died holding it. A blocking lock first spins briefly (`SpinPolicy`):
    /// critical sections in shared memory are short, and sleeping in the kernel costs more.
    func lock(blocking: Bool = true, deadline: UInt64 = 0) throws(MemoryMapError) -> Bool? {
        var rc = colony_mutex_lock_until(pointer, 0, 1)
        if rc == EBUSY && blocking {
            var round = 0
            while rc == EBUSY && round < SpinPolicy.rounds {
                colony_cpu_relax()
                round += 1
                if round % 8 == 0 { rc = colony_mutex_lock_until(pointer, 0, 1) }
            }
            if rc == EBUSY { rc = colony_mutex_lock_until(pointer, deadline, 0) }
        }
        return try interpret(rc)
    }

    private func interpret(_ rc: Int32) throws(MemoryMapError) -> Bool? {
        switch rc {
        case 0: return false
        case EOWNERDEAD:
            pthread_mutex_consistent(pointer.assumingMemoryBound(to: pthread_mutex_t.self))
            return true
        case ETIMEDOUT, EBUSY: return nil
        case EDEADLK: throw MemoryMapError(.wouldDeadlock, "this thread already holds the lock; acquiring it again would never return (use an RLock)")
        default: throw MemoryMapError(.system, "locking a process-shared mutex failed (errno \(rc))", errno: rc)
        }
    }

    /// Locks for internal bookkeeping, where a dead previous owner changes nothing.
    func lockForState() {
        _ = try? lock()
    }

    func unlock() throws(MemoryMapError) {
        let rc = pthread_mutex_unlock(pointer.assumingMemoryBound(to: pthread_mutex_t.self))
        guard rc == 0 else {
            throw MemoryMapError(.notOwner, rc == EPERM ? "release of a lock this thread does not hold" : "unlock failed (errno \(rc))", errno: rc)
        }
    }
}

/// A condition variable for processes: a sequence word in shared memory and a futex on it.
/// Not a pthread condition variable: glibc's keeps per-waiter state that a waiter killed
/// while waiting never clears, after which a broadcast blocks forever. Here a waiter leaves
/// nothing behind. Like POSIX condition variables, a wait may return spuriously; callers
/// re-check what they wait for.
struct SharedCondition {
    static let size = 64
    let pointer: UnsafeMutableRawPointer
    // Word 0: the sequence, bumped by every signal. Word 1: threads asleep on it.
    private var sequence: UnsafeAtomic<UInt32> { atomicView(pointer.assumingMemoryBound(to: UInt32.self)) }
    private var sleepers: UnsafeAtomic<UInt32> { atomicView(pointer.assumingMemoryBound(to: UInt32.self) + 1) }
    private var word: UnsafeMutablePointer<UInt32> { pointer.assumingMemoryBound(to: UInt32.self) }

    func initialize() throws(MemoryMapError) {
        pointer.initializeMemory(as: UInt32.self, repeating: 0, count: 2)
    }

    /// Waits with `mutex` held: gives it up, waits until a signal or the deadline, takes it
    /// back. False when the deadline passed. Spins up to `spinRounds` before sleeping.
    func wait(_ mutex: SharedMutex, deadline: UInt64, spinRounds: Int = SpinPolicy.rounds) -> Bool {
        let observed = sequence.load(ordering: .sequentiallyConsistent)
        try? mutex.unlock()
        var timedOut = false
        var spun = 0
        while sequence.load(ordering: .relaxed) == observed && spun < spinRounds {
            colony_cpu_relax()
            spun += 1
        }
        if sequence.load(ordering: .sequentiallyConsistent) == observed {
            sleepers.wrappingIncrement(ordering: .sequentiallyConsistent)
            var rc: Int32
            repeat {
                rc = colony_futex_wait_shared(word, observed, deadline)
            } while rc == EINTR
            sleepers.wrappingDecrement(ordering: .sequentiallyConsistent)
            timedOut = rc == ETIMEDOUT
        }
        mutex.lockForState()
        return !timedOut
    }

    /// Wakes up to `count` waiters (after a change made with the mutex held); no system call
    /// when nobody sleeps.
    func signal(_ count: Int32 = 1) {
        sequence.wrappingIncrement(ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { _ = colony_futex_wake_shared(word, count) }
    }

    func broadcast() { signal(Int32.max) }
}

/// A process-shared object that travels to other processes as its shared memory name: it
/// encodes as the name and decodes by opening it (pass it to a child process as an argument).
public protocol SharedByName: Codable {
    /// The shared memory name other processes open it by.
    var name: String { get }
    init(opening name: String) throws(MemoryMapError)
}

extension SharedByName {
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }

    public init(from decoder: any Decoder) throws {
        try self.init(opening: try decoder.singleValueContainer().decode(String.self))
    }
}

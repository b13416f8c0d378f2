import Atomics
import ColonyTransport
import ColonyWire
import Foundation
import NIOCore
import Threading

/// When the journal's writes reach the disk (`colony manager --persist`), as Redis's
/// `appendfsync`.
public enum DurabilityPolicy: String, Sendable, CaseIterable {
    /// Written to the operating system within a few milliseconds; the OS decides when it
    /// reaches the disk (a killed manager loses nothing, a power loss may).
    case no
    /// Synced about once a second: a power loss costs at most about a second of changes.
    case everysec
    /// Synced before a change is acknowledged; concurrent changes share one sync.
    case always
}

/// The manager's journal of changes to persisted objects (SPEC 6.4): an append-only file of
/// checksummed records, written by a thread of its own so that no event loop waits on the
/// disk. Recording is an encode into memory under a short lock; the thread writes what
/// gathered, syncs as the policy says, and then lets waiting answers go.
///
/// The file is `COLONYJ1` and then records: a 4-byte big-endian length, the CRC-32C of the
/// body, and the body, a MessagePack array. A crash can tear only the tail, which the next
/// start finds by its length or checksum and cuts off (`JournalFile.read`).
public final class Journal: @unchecked Sendable {
    public let policy: DurabilityPolicy
    /// Guards what follows and wakes the writer.
    private let lock = NSCondition()
    private var file: JournalFile.Opened
    private var pending = ByteBuffer()
    private var spare = ByteBuffer()
    /// A compaction's cut (`rotate(to:)`): the next file, and what was recorded before the cut.
    private var rotation: (next: JournalFile.Opened, before: ByteBuffer)?
    private var stopping = false
    private var waiters: [(sequence: UInt64, resume: @Sendable () -> Void)] = []
    /// Set when an answer waits or the journal stops: ends the writer's poll, which reads it
    /// without the lock.
    private let workArrived = ManagedAtomic<Bool>(false)
    /// With `always`, how long the writer polls for the next answer that waits before it
    /// sleeps (`colony manager --busy-poll-us`; 0: never), and its back-off.
    private let pollNanoseconds: UInt64
    private var pollBackoff = BusyPollBackoff()
    private var failure: String?
    /// Records appended so far, and how many of them the policy counts as kept.
    private let appended = ManagedAtomic<UInt64>(0)
    private let kept = ManagedAtomic<UInt64>(0)
    private let bytes: ManagedAtomic<Int>
    private let lastSyncNanoseconds = ManagedAtomic<UInt64>(0)
    private let syncs = ManagedAtomic<UInt64>(0)
    private var writer: Threading.Thread?
    /// fdatasync(2), or a test's stand-in that decides when a sync completes.
    private let syncFile: @Sendable (Int32) -> Int32

    /// How long the writer sleeps between writes when nothing waits for it (`no`,
    /// `everysec`): what a killed manager may lose at most is what the OS had not been
    /// given yet.
    static let writeInterval = 0.005

    /// Appends to the journal at `path` after its valid records (a file from
    /// `JournalFile.read` must have been cut to `validBytes` first); a missing file is
    /// created, beginning `generation`.
    public convenience init(path: String, policy: DurabilityPolicy, generation: UInt64 = 0, pollNanoseconds: UInt64 = 0) throws(JournalError) {
        try self.init(file: try JournalFile.open(path, generation: generation), policy: policy, pollNanoseconds: pollNanoseconds)
    }

    init(
        file: JournalFile.Opened, policy: DurabilityPolicy, pollNanoseconds: UInt64 = 0,
        syncFile: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) }
    ) throws(JournalError) {
        self.file = file
        self.policy = policy
        self.pollNanoseconds = pollNanoseconds
        self.syncFile = syncFile
        bytes = ManagedAtomic(file.size)
        pending.reserveCapacity(1 << 16)
        spare.reserveCapacity(1 << 16)
        let writer = Threading.Thread(name: "colony-journal", daemon: true) { [unowned self] in run() }
        do {
            try writer.start()
        } catch {
            close(file.descriptor)
            throw JournalError(description: "cannot start the journal's writer thread: \(error)")
        }
        self.writer = writer
    }

    deinit { close(file.descriptor) }

    /// The file records go to, and the generation it began.
    public var path: String { lock.withLock { rotation?.next.path ?? file.path } }
    public var generation: UInt64 { lock.withLock { rotation?.next.generation ?? file.generation } }

    /// Adds a record and returns its number (`whenKept(through:)` counts in these); call it
    /// while holding the lock of the object it changes, so that records of one object are in
    /// the order of its changes. Cheap: no system call.
    @discardableResult
    public func record(_ body: WireValue) -> UInt64 {
        lock.withLock {
            JournalFile.writeRecord(body, into: &pending)
            return appended.wrappingIncrementThenLoad(ordering: .relaxed)
        }
    }

    /// Whether records were appended that the policy does not count as kept yet.
    public var hasUnkeptRecords: Bool {
        kept.load(ordering: .acquiring) < appended.load(ordering: .acquiring)
    }

    /// How many records were appended so far, and how many of them are kept as the policy
    /// says: a change made before `appendedCount` was read is kept once `keptCount` reaches it.
    public var appendedCount: UInt64 { appended.load(ordering: .acquiring) }
    public var keptCount: UInt64 { kept.load(ordering: .acquiring) }

    /// Calls `resume` (on the journal's thread, or at once) when every record appended up
    /// to now (or up to `target`) is kept as the policy says: for `always`, synced to the disk.
    public func whenKept(through target: UInt64? = nil, _ resume: @escaping @Sendable () -> Void) {
        let target = target ?? appended.load(ordering: .acquiring)
        if kept.load(ordering: .acquiring) >= target {
            resume()
            return
        }
        lock.withLock {
            waiters.append((target, resume))
            workArrived.store(true, ordering: .relaxed)
            lock.signal()
        }
    }

    /// Records from now on go to `next`; what was recorded before is written and synced to
    /// the current file, which is then closed. Returns at once (`awaitRotation` waits).
    func rotate(to next: JournalFile.Opened) {
        lock.withLock {
            precondition(rotation == nil, "one journal rotation at a time")
            let before = pending
            pending = ByteBuffer()
            pending.reserveCapacity(1 << 16)
            rotation = (next, before)
            lock.signal()
        }
    }

    /// Waits until the writer has finished the previous file (`rotate(to:)`).
    func awaitRotation() {
        lock.withLock {
            while rotation != nil { lock.wait() }
        }
    }

    /// Writes and syncs everything recorded, then stops the thread. Records after this are
    /// not written.
    public func stop() {
        lock.withLock {
            stopping = true
            workArrived.store(true, ordering: .relaxed)
            lock.signal()
        }
        _ = try? writer?.join()
        writer = nil
    }

    /// What `status` shows about persistence.
    public var statistics: JournalStatistics {
        JournalStatistics(
            policy: policy, bytes: bytes.load(ordering: .relaxed), records: appended.load(ordering: .relaxed),
            syncs: syncs.load(ordering: .relaxed), lastSyncNanoseconds: lastSyncNanoseconds.load(ordering: .relaxed),
            failure: lock.withLock { failure })
    }

    private func run() {
        var lastSync = DispatchTime.now().uptimeNanoseconds
        var unsynced = false
        while true {
            if policy == .always { pollForWaiter() }
            let (batch, through, done, cut) = lock.withLock { () -> (ByteBuffer, UInt64, Bool, (next: JournalFile.Opened, before: ByteBuffer)?) in
                if !stopping && rotation == nil && (policy != .always || waiters.isEmpty) && failure == nil {
                    // Never woken by a record (that would cost the event loop a system call and
                    // the writer a wake-up per record, measured at a fifth of the throughput):
                    // it looks every few milliseconds, or when an answer waits.
                    _ = lock.wait(until: Date(timeIntervalSinceNow: policy == .always ? 1 : Journal.writeInterval))
                }
                swap(&pending, &spare)
                return (spare, appended.load(ordering: .relaxed), stopping, rotation)
            }
            if let cut {
                // The old file gets everything before the cut and is synced and closed. What
                // was written is not written again when only the sync failed.
                let written = write(cut.before, to: file, keepingOnFailure: { self.rotation!.before = $0 })
                if written { lock.withLock { rotation!.before = ByteBuffer() } }
                guard written, sync(file) else {
                    lock.withLock {
                        var again = batch
                        again.writeBuffer(&pending)
                        pending = again
                        spare.clear()
                    }
                    continue
                }
                close(file.descriptor)
                lock.withLock {
                    file = cut.next
                    rotation = nil
                    lock.broadcast()
                }
                bytes.store(cut.next.size, ordering: .relaxed)
                unsynced = false
            }
            var written = write(batch, to: file) { kept in
                var again = kept
                again.writeBuffer(&self.pending)
                self.pending = again
            }
            lock.withLock { spare.clear() }
            unsynced = unsynced || batch.readableBytes > 0
            let now = DispatchTime.now().uptimeNanoseconds
            if written && unsynced && (policy == .always || done || (policy == .everysec && now - lastSync >= 1_000_000_000)) {
                written = sync(file)
                unsynced = !written
                lastSync = now
            }
            if written {
                kept.store(through, ordering: .releasing)
                let ready = lock.withLock { () -> [@Sendable () -> Void] in
                    failure = nil
                    let ready = waiters.filter { $0.sequence <= through }.map(\.resume)
                    waiters.removeAll { $0.sequence <= through }
                    workArrived.store(!waiters.isEmpty || stopping, ordering: .relaxed)
                    return ready
                }
                for resume in ready { resume() }
            }
            if done { return }
        }
    }

    /// With `always`, after a sync: the event loops usually register the next answers that
    /// wait within a few hundred microseconds, and a writer still polling takes them without
    /// being woken from sleep. That wake-up, on top of the loop's when the sync is done, cost
    /// a third of the throughput at 50 clients on 2 cores (syncs served 9 changes instead of 15).
    private func pollForWaiter() {
        // Unlike the event loops' polls, this one does not stop when the CPUs are crowded:
        // measured at 50 clients on 2 cores, it then polled too rarely, and syncs served 16
        // changes instead of 22 (throughput down by about an eighth).
        guard pollNanoseconds > 0, BusyPoller.hasSeveralCPUs, !workArrived.load(ordering: .relaxed), pollBackoff.shouldPoll() else { return }
        let deadline = DispatchTime.now().uptimeNanoseconds + pollNanoseconds
        while !workArrived.load(ordering: .relaxed) {
            guard DispatchTime.now().uptimeNanoseconds < deadline else {
                pollBackoff.record(hit: false)
                return
            }
            // Lets an event loop run first if it shares this CPU.
            sched_yield()
        }
        pollBackoff.record(hit: true)
    }

    /// Writes a batch; on failure hands what is left to `keep` (under the lock) to try again
    /// (answers that wait stay held) and says why in `statistics`.
    private func write(_ batch: ByteBuffer, to file: JournalFile.Opened, keepingOnFailure keep: (ByteBuffer) -> Void) -> Bool {
        var remaining = batch.readableBytesView[...]
        while !remaining.isEmpty {
            let count = remaining.withUnsafeBytes { Foundation.write(file.descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let reason = "cannot write \(file.path): \(String(cString: strerror(errno)))"
                lock.withLock {
                    failure = reason
                    keep(ByteBuffer(remaining))
                }
                Thread.sleep(forTimeInterval: 0.1)
                return false
            }
            remaining = remaining.dropFirst(count)
            bytes.wrappingIncrement(by: count, ordering: .relaxed)
        }
        return true
    }

    private func sync(_ file: JournalFile.Opened) -> Bool {
        let start = DispatchTime.now().uptimeNanoseconds
        guard syncFile(file.descriptor) == 0 else {
            let reason = "cannot sync \(file.path): \(String(cString: strerror(errno)))"
            lock.withLock { failure = reason }
            Thread.sleep(forTimeInterval: 0.1)
            return false
        }
        lastSyncNanoseconds.store(DispatchTime.now().uptimeNanoseconds - start, ordering: .relaxed)
        syncs.wrappingIncrement(ordering: .relaxed)
        return true
    }
}

/// Figures about the journal, for `status`.
public struct JournalStatistics: Sendable {
    public let policy: DurabilityPolicy
    /// The file's size.
    public let bytes: Int
    /// Records appended since the manager started.
    public let records: UInt64
    public let syncs: UInt64
    public let lastSyncNanoseconds: UInt64
    /// Why the last write or sync failed, while it keeps failing.
    public let failure: String?
}

/// The journal's file format: reading what a previous manager left, and the record layout.
public enum JournalFile {
    static let magic = "COLONYJ1"
    /// No record is larger: a length beyond it is damage, not a record to allocate for.
    static let maxRecordSize = 1 << 30

    /// What a journal file holds: its valid records, and what had to be cut off its end.
    public struct Contents {
        public var records: [WireValue]
        /// The length of the valid prefix: the journal continues from here.
        public var validBytes: Int
        /// Bytes after the valid prefix (a torn or damaged tail), and why they are invalid.
        public var droppedBytes: Int
        public var damage: String?
        /// From the file's first record, `["begin", generation]` (a journal) or
        /// `["snapshot", generation]`, which `records` leaves out.
        public var generation: UInt64?
        public var isSnapshot = false
    }

    /// Reads a journal; a missing file is an empty journal. Records after the first torn or
    /// damaged one are not read: the valid prefix is what was written in order.
    public static func read(path: String) throws(JournalError) -> Contents {
        guard FileManager.default.fileExists(atPath: path) else {
            return Contents(records: [], validBytes: 0, droppedBytes: 0, damage: nil)
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw JournalError.cannotRead(path, errno) }
        return try parse(Array(data), path: path)
    }

    /// Reads journal bytes (`path` names them in errors).
    public static func parse(_ bytes: [UInt8], path: String) throws(JournalError) -> Contents {
        let header = Array(magic.utf8)
        if bytes.count < header.count {
            // A crash while the header was first written leaves a prefix of it.
            guard Array(header.prefix(bytes.count)) == bytes else { throw JournalError.notAJournal(path) }
            return Contents(records: [], validBytes: 0, droppedBytes: bytes.count, damage: bytes.isEmpty ? nil : "a torn header")
        }
        guard Array(bytes.prefix(header.count)) == header else { throw JournalError.notAJournal(path) }
        var records: [WireValue] = []
        var offset = header.count
        var damage: String?
        while offset < bytes.count {
            guard bytes.count - offset >= 8 else {
                damage = "a torn record header at byte \(offset)"
                break
            }
            let length = Int(bigEndian(bytes, offset))
            let checksum = bigEndian(bytes, offset + 4)
            guard length <= maxRecordSize, length <= bytes.count - offset - 8 else {
                damage = "a record at byte \(offset) that runs past the end (\(length) bytes)"
                break
            }
            let body = bytes[(offset + 8)..<(offset + 8 + length)]
            guard CRC32C.checksum(body) == checksum else {
                damage = "a record at byte \(offset) whose checksum does not match"
                break
            }
            guard let record = try? WireValue(messagePack: body, limits: WireLimits(maxDepth: 64)) else {
                damage = "a record at byte \(offset) that does not decode"
                break
            }
            records.append(record)
            offset += 8 + length
        }
        var contents = Contents(records: records, validBytes: offset, droppedBytes: bytes.count - offset, damage: damage)
        if let first = records.first?.arrayValue, first.count == 2, let kind = first[0].stringValue,
            kind == "begin" || kind == "snapshot", let generation = first[1].uint64Value
        {
            contents.generation = generation
            contents.isSnapshot = kind == "snapshot"
            contents.records.removeFirst()
        }
        return contents
    }

    /// A journal file open for appending.
    struct Opened: Sendable {
        let descriptor: Int32
        let path: String
        let generation: UInt64
        let size: Int
    }

    /// Opens `path` for appending; a missing or empty file is created and begun with
    /// `["begin", generation]`, synced. An existing file's generation is its first record's.
    static func open(_ path: String, generation: UInt64) throws(JournalError) -> Opened {
        let descriptor = Foundation.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw JournalError.cannotOpen(path, errno) }
        var size = Int(lseek(descriptor, 0, SEEK_END))
        var begun = generation
        if size == 0 {
            var header = ByteBuffer(bytes: Array(magic.utf8))
            writeRecord(["begin", .integer(generation)], into: &header)
            let count = header.withUnsafeReadableBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
            guard count == header.readableBytes, fsync(descriptor) == 0 else {
                let code = errno
                close(descriptor)
                throw JournalError.cannotWrite(path, code)
            }
            size = count
        } else {
            let contents = try read(path: path)
            begun = contents.generation ?? generation
        }
        return Opened(descriptor: descriptor, path: path, generation: begun, size: size)
    }

    /// Writes one record: length, checksum, body.
    static func writeRecord(_ body: WireValue, into buffer: inout ByteBuffer) {
        writeRecord(into: &buffer) { $0.writeWireValue(body) }
    }

    /// Frames `body`'s bytes as a record, whatever they hold (tests and the fuzzer make
    /// records no manager would write).
    public static func writeRecord(bytes body: ByteBuffer, into buffer: inout ByteBuffer) {
        writeRecord(into: &buffer) { $0.writeImmutableBuffer(body) }
    }

    private static func writeRecord(into buffer: inout ByteBuffer, _ writeBody: (inout ByteBuffer) -> Void) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(0))
        writeBody(&buffer)
        let length = buffer.writerIndex - start - 8
        let checksum = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(start - buffer.readerIndex + 8)...]))
        }
        buffer.setInteger(UInt32(length), at: start)
        buffer.setInteger(checksum, at: start + 4)
    }

    private static func bigEndian(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// CRC-32C (Castagnoli), the checksum of journal records: what iSCSI, ext4 and LevelDB use.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}

/// The journal cannot be opened, read or written.
public struct JournalError: Error, CustomStringConvertible {
    public let description: String

    static func cannotOpen(_ path: String, _ code: Int32) -> JournalError {
        JournalError(description: "cannot open the journal \(path): \(String(cString: strerror(code)))")
    }
    static func cannotRead(_ path: String, _ code: Int32) -> JournalError {
        JournalError(description: "cannot read the journal \(path): \(String(cString: strerror(code)))")
    }
    static func cannotWrite(_ path: String, _ code: Int32) -> JournalError {
        JournalError(description: "cannot write the journal \(path): \(String(cString: strerror(code)))")
    }
    static func notAJournal(_ path: String) -> JournalError {
        JournalError(
            description: "\(path) is not a Colony journal (it does not start with \(JournalFile.magic)); move it away, or start the manager on another state directory")
    }
}

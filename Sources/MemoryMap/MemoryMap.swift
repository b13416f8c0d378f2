import CMemoryMapShim
import Glibc
import Threading

/// A memory-mapped file or anonymous memory (Python `mmap.mmap`): a byte array with a file
/// position, readable and writable in place. Safe to use from several threads (each call is
/// atomic); two processes that map the same file or shared memory see each other's writes.
///
///     let map = try MemoryMap(path: "data.bin", length: 4096)
///     try map.write(Array("hello".utf8))
///     try map.seek(0)
///     let line = try map.readLine()
public final class MemoryMap: @unchecked Sendable, CustomStringConvertible {
    /// Python's `ACCESS_READ`, `ACCESS_WRITE` (shared: writes reach the file and every other
    /// mapping) and `ACCESS_COPY` (private copy-on-write: writes stay in this map).
    public enum Access: Sendable { case read, write, copy }

    /// Python `os.SEEK_SET`, `SEEK_CUR`, `SEEK_END`.
    public enum Whence: Sendable { case set, current, end }

    /// `madvise(2)` advice (Python `mmap.MADV_*`).
    public enum Advice: Sendable {
        case normal, random, sequential, willNeed, dontNeed

        var value: Int32 {
            switch self {
            case .normal: MADV_NORMAL
            case .random: MADV_RANDOM
            case .sequential: MADV_SEQUENTIAL
            case .willNeed: MADV_WILLNEED
            case .dontNeed: MADV_DONTNEED
            }
        }
    }

    /// Python `mmap.ALLOCATIONGRANULARITY` (and `PAGESIZE`): file offsets must be multiples of it.
    public static let allocationGranularity = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Python `mmap.PROT_READ`, `PROT_WRITE`, `PROT_EXEC`.
    public struct Protection: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let read = Protection(rawValue: PROT_READ)
        public static let write = Protection(rawValue: PROT_WRITE)
        public static let exec = Protection(rawValue: PROT_EXEC)
    }

    /// Python `mmap.MAP_SHARED` (changes reach the file and other maps of it) and
    /// `MAP_PRIVATE` (changes stay in this map: copy-on-write).
    public enum Sharing: Sendable { case shared, `private` }

    /// What the map allows, as Python derives it from `prot` and `flags`: read-only without
    /// write protection, copy-on-write when private.
    public let access: Access
    public let protection: Protection
    public let sharing: Sharing
    /// The offset into the file where the map starts.
    public let offset: Int
    /// Whether the map keeps its own duplicate of the file descriptor (Python's `trackfd`);
    /// without it `size` and `resize` cannot work.
    public let tracksFileDescriptor: Bool
    private let lock = Lock()
    // Guarded by lock.
    private var base: UnsafeMutableRawPointer?
    private var length: Int
    private var position = 0
    private var descriptor: Int32  // -1 for private anonymous memory
    private let anonymous: Bool

    /// Maps `length` bytes of the open file `fileDescriptor` from `offset` (Python
    /// `mmap.mmap(fileno, length, access=, offset=, trackfd=)`). `length` 0 maps the rest of
    /// the file. The map keeps its own duplicate of the descriptor unless
    /// `trackFileDescriptor` is false (Python 3.13's `trackfd=False`).
    public convenience init(
        fileDescriptor: Int32, length: Int = 0, access: Access = .write, offset: Int = 0, trackFileDescriptor: Bool = true
    ) throws(MemoryMapError) {
        try self.init(
            fileDescriptor: fileDescriptor, length: length, sharing: access == .copy ? .private : .shared,
            protection: access == .read ? [.read] : [.read, .write], offset: offset, trackFileDescriptor: trackFileDescriptor)
    }

    /// Python `mmap.mmap(fileno, length, flags=, prot=, offset=, trackfd=)`: the sharing and
    /// protection given directly instead of an access mode.
    public init(
        fileDescriptor: Int32, length: Int = 0, sharing: Sharing, protection: Protection = [.read, .write], offset: Int = 0,
        trackFileDescriptor: Bool = true
    ) throws(MemoryMapError) {
        guard length >= 0 else { throw MemoryMapError(.invalidArgument, "memory mapped length must be non-negative") }
        guard offset >= 0 else { throw MemoryMapError(.invalidArgument, "memory mapped offset must be non-negative") }
        guard offset % MemoryMap.allocationGranularity == 0 else {
            throw MemoryMapError(.unalignedOffset, "the offset \(offset) is not a multiple of MemoryMap.allocationGranularity (\(MemoryMap.allocationGranularity))")
        }
        var status = stat()
        guard fstat(fileDescriptor, &status) == 0 else { throw MemoryMapError.system("fstat") }
        let fileSize = Int(status.st_size)
        let mapped: Int
        if length == 0 {
            guard fileSize > offset else {
                throw MemoryMapError(.fileTooShort, fileSize == 0 ? "cannot mmap an empty file" : "the offset is at or past the end of the file")
            }
            mapped = fileSize - offset
        } else {
            guard offset + length <= fileSize else {
                throw MemoryMapError(.fileTooShort, "mmap length is greater than file size (\(fileSize) bytes from offset \(offset)); grow the file first (ftruncate)")
            }
            mapped = length
        }
        let copy = trackFileDescriptor ? dup(fileDescriptor) : -1
        guard copy >= 0 || !trackFileDescriptor else { throw MemoryMapError.system("dup") }
        access = !protection.contains(.write) ? .read : sharing == .private ? .copy : .write
        self.protection = protection
        self.sharing = sharing
        self.offset = offset
        self.length = mapped
        tracksFileDescriptor = trackFileDescriptor
        descriptor = copy
        anonymous = false
        let address = mmap(nil, mapped, protection.rawValue, sharing == .private ? MAP_PRIVATE : MAP_SHARED, fileDescriptor, off_t(offset))
        guard let address, address != MAP_FAILED else {
            let error = MemoryMapError.system("mmap")
            if copy >= 0 { Glibc.close(copy) }
            throw error
        }
        base = address
    }

    /// Opens `path` and maps it (read access opens it read-only).
    public convenience init(path: String, length: Int = 0, access: Access = .write, offset: Int = 0) throws(MemoryMapError) {
        let descriptor = Glibc.open(path, access == .write ? O_RDWR | O_CLOEXEC : O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw MemoryMapError.system("open \(path)") }
        defer { Glibc.close(descriptor) }
        try self.init(fileDescriptor: descriptor, length: length, access: access, offset: offset)
    }

    /// Anonymous memory of `length` bytes, zero-filled (Python `mmap.mmap(-1, length)`).
    /// Shared memory lives in a memory file (memfd), so it can grow with `resize`; private
    /// memory is copy-on-write.
    public init(anonymousLength length: Int, shared: Bool = true) throws(MemoryMapError) {
        guard length > 0 else { throw MemoryMapError(.invalidArgument, "anonymous memory needs a positive length") }
        var descriptor: Int32 = -1
        if shared {
            descriptor = colony_memfd_create("colony-mmap")
            guard descriptor >= 0 else { throw MemoryMapError.system("memfd_create") }
            guard ftruncate(descriptor, off_t(length)) == 0 else {
                let error = MemoryMapError.system("ftruncate")
                Glibc.close(descriptor)
                throw error
            }
        }
        let flags = shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, flags, descriptor, 0)
        guard let address, address != MAP_FAILED else {
            let error = MemoryMapError.system("mmap")
            if descriptor >= 0 { Glibc.close(descriptor) }
            throw error
        }
        access = .write
        protection = [.read, .write]
        sharing = shared ? .shared : .private
        offset = 0
        tracksFileDescriptor = true
        anonymous = true
        self.length = length
        self.descriptor = descriptor
        base = address
    }

    deinit {
        if let base { munmap(base, length) }
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    // MARK: State

    private func open() throws(MemoryMapError) -> UnsafeMutableRawPointer {
        guard let base else { throw MemoryMapError(.closed, "mmap closed or invalid") }
        return base
    }

    private func writable() throws(MemoryMapError) -> UnsafeMutableRawPointer {
        let base = try open()
        guard access != .read else { throw MemoryMapError(.readOnly, "mmap can't modify a readonly memory map") }
        return base
    }

    /// Python `m.close()`: unmaps; later calls fail with `.closed`. Closing twice is harmless.
    public func close() {
        lock.withLock {
            if let base { munmap(base, length) }
            base = nil
            if descriptor >= 0 { Glibc.close(descriptor) }
            descriptor = -1
        }
    }

    /// Python `m.closed`.
    public var isClosed: Bool { lock.withLock { base == nil } }

    /// Python `with mmap.mmap(...) as m:`: runs `body` with the map and closes it when
    /// `body` returns or throws.
    public func using<Result>(_ body: (MemoryMap) throws -> Result) rethrows -> Result {
        defer { close() }
        return try body(self)
    }

    /// As Python 3.13's repr: `<mmap closed=False, access=write, length=13, pos=0, offset=0>`,
    /// or `<mmap closed=True>`.
    public var description: String {
        lock.withLock {
            base == nil ? "<mmap closed=True>" : "<mmap closed=False, access=\(access), length=\(length), pos=\(position), offset=\(offset)>"
        }
    }

    /// Python `len(m)`: the mapped length; `.closed` once the map is closed, as Python's
    /// ValueError.
    public var count: Int {
        get throws(MemoryMapError) {
            try lock.withLock { () throws(MemoryMapError) -> Int in
                _ = try open()
                return length
            }
        }
    }

    /// Python `m.size()`: the size of the file (for anonymous memory, the mapped length).
    public func size() throws(MemoryMapError) -> Int {
        try lock.withLock { () throws(MemoryMapError) -> Int in
            _ = try open()
            guard !anonymous else { return length }
            guard tracksFileDescriptor else {
                throw MemoryMapError(.invalidArgument, "this map does not track its file (trackFileDescriptor: false), so it cannot tell the file's size")
            }
            var status = stat()
            guard fstat(descriptor, &status) == 0 else { throw MemoryMapError.system("fstat") }
            return Int(status.st_size)
        }
    }

    /// Python `m.tell()`.
    public func tell() throws(MemoryMapError) -> Int {
        try lock.withLock { () throws(MemoryMapError) -> Int in
            _ = try open()
            return position
        }
    }

    /// Python `m.seek(pos, whence)`; the new position must lie in `0...count`.
    public func seek(_ offset: Int, whence: Whence = .set) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            _ = try open()
            let origin = switch whence {
            case .set: 0
            case .current: position
            case .end: length
            }
            let (target, overflow) = origin.addingReportingOverflow(offset)
            guard !overflow, target >= 0, target <= length else {
                throw MemoryMapError(.outOfRange, "seek out of range: \(origin) + \(offset) is outside 0...\(length)")
            }
            position = target
        }
    }

    // MARK: Reading and writing at the position

    /// Python `m.read(n)`: up to `n` bytes from the position (all the rest when nil).
    public func read(_ n: Int? = nil) throws(MemoryMapError) -> [UInt8] {
        try lock.withLock { () throws(MemoryMapError) -> [UInt8] in
            let base = try open()
            let available = length - position
            let count = n.map { $0 < 0 ? available : min($0, available) } ?? available
            let bytes = [UInt8](UnsafeRawBufferPointer(start: base + position, count: count))
            position += count
            return bytes
        }
    }

    /// Python `m.read_byte()`.
    public func readByte() throws(MemoryMapError) -> UInt8 {
        try lock.withLock { () throws(MemoryMapError) -> UInt8 in
            let base = try open()
            guard position < length else { throw MemoryMapError(.outOfRange, "read byte out of range") }
            defer { position += 1 }
            return base.load(fromByteOffset: position, as: UInt8.self)
        }
    }

    /// Python `m.readline()`: up to and including the next `\n`, or to the end.
    public func readLine() throws(MemoryMapError) -> [UInt8] {
        try lock.withLock { () throws(MemoryMapError) -> [UInt8] in
            let base = try open()
            let rest = UnsafeRawBufferPointer(start: base + position, count: length - position)
            let end = rest.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? rest.count
            position += end
            return [UInt8](rest[..<end])
        }
    }

    /// Python `m.write(bytes)`: writes at the position and moves past; the bytes must fit.
    @discardableResult
    public func write(_ bytes: some Collection<UInt8>) throws(MemoryMapError) -> Int {
        try lock.withLock { () throws(MemoryMapError) -> Int in
            let base = try writable()
            guard bytes.count <= length - position else {
                throw MemoryMapError(.outOfRange, "data out of range: \(bytes.count) bytes at position \(position) of \(length)")
            }
            copy(bytes, to: base + position)
            position += bytes.count
            return bytes.count
        }
    }

    /// Python `m.write_byte(byte)`.
    public func writeByte(_ byte: UInt8) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try writable()
            guard position < length else { throw MemoryMapError(.outOfRange, "write byte out of range") }
            base.storeBytes(of: byte, toByteOffset: position, as: UInt8.self)
            position += 1
        }
    }

    private func copy(_ bytes: some Collection<UInt8>, to destination: UnsafeMutableRawPointer) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { source in
            destination.copyMemory(from: source.baseAddress!, byteCount: source.count)
        }
        if done == nil {
            var offset = 0
            for byte in bytes {
                destination.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
                offset += 1
            }
        }
    }

    // MARK: Indexing and slicing

    /// Python's slice bounds: nil for the default, negative from the end, clamped.
    private func bounds(_ start: Int?, _ end: Int?, default first: Int) -> (Int, Int) {
        func clamp(_ value: Int?, _ fallback: Int) -> Int {
            guard let value else { return fallback }
            return value < 0 ? max(0, value + length) : min(value, length)
        }
        return (clamp(start, first), clamp(end, length))
    }

    private func index(_ index: Int) throws(MemoryMapError) -> Int {
        let adjusted = index < 0 ? index + length : index
        guard adjusted >= 0, adjusted < length else { throw MemoryMapError(.outOfRange, "mmap index out of range") }
        return adjusted
    }

    /// Python `m[i]` (negative indices count from the end).
    public subscript(index: Int) -> UInt8 {
        get throws(MemoryMapError) {
            try lock.withLock { () throws(MemoryMapError) -> UInt8 in
                let base = try open()
                return base.load(fromByteOffset: try self.index(index), as: UInt8.self)
            }
        }
    }

    /// Python `m[i] = byte`.
    public func set(_ index: Int, _ byte: UInt8) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try writable()
            base.storeBytes(of: byte, toByteOffset: try self.index(index), as: UInt8.self)
        }
    }

    /// Python `m[start:stop:step]`, with Python's clamping (never out of range).
    public func slice(_ start: Int? = nil, _ stop: Int? = nil, step: Int = 1) throws(MemoryMapError) -> [UInt8] {
        try lock.withLock { () throws(MemoryMapError) -> [UInt8] in
            let base = try open()
            guard step != 0 else { throw MemoryMapError(.invalidArgument, "slice step cannot be zero") }
            let positions = sliceIndices(start, stop, step)
            return positions.map { base.load(fromByteOffset: $0, as: UInt8.self) }
        }
    }

    /// Python `m[start:stop:step] = bytes`: the slice and the bytes must have the same length.
    public func replace(_ start: Int? = nil, _ stop: Int? = nil, step: Int = 1, with bytes: [UInt8]) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try writable()
            guard step != 0 else { throw MemoryMapError(.invalidArgument, "slice step cannot be zero") }
            let positions = sliceIndices(start, stop, step)
            guard positions.count == bytes.count else {
                throw MemoryMapError(.outOfRange, "mmap slice assignment is wrong size: \(bytes.count) bytes for a slice of \(positions.count)")
            }
            for (position, byte) in zip(positions, bytes) { base.storeBytes(of: byte, toByteOffset: position, as: UInt8.self) }
        }
    }

    /// The byte offsets a Python slice selects.
    private func sliceIndices(_ start: Int?, _ stop: Int?, _ step: Int) -> [Int] {
        if step > 0 {
            let (low, high) = bounds(start, stop, default: 0)
            return low < high ? Array(stride(from: low, to: high, by: step)) : []
        }
        func clamp(_ value: Int?, _ fallback: Int) -> Int {
            guard let value else { return fallback }
            return value < 0 ? max(-1, value + length) : min(value, length - 1)
        }
        let high = clamp(start, length - 1)
        let low = clamp(stop, -1)
        return high > low ? Array(stride(from: high, to: low, by: step)) : []
    }

    // MARK: Searching

    /// Python `m.find(sub, start, end)`: the lowest offset of `sub` within `start..<end`
    /// (start defaults to the current position), or -1.
    public func find(_ sub: [UInt8], start: Int? = nil, end: Int? = nil) throws(MemoryMapError) -> Int {
        try search(sub, start, end, last: false)
    }

    /// Python `m.rfind(sub, start, end)`: the highest offset, or -1.
    public func rfind(_ sub: [UInt8], start: Int? = nil, end: Int? = nil) throws(MemoryMapError) -> Int {
        try search(sub, start, end, last: true)
    }

    /// Non-overlapping occurrences of `sub` within `start..<end` (Python `bytes.count`).
    public func count(of sub: [UInt8], start: Int? = nil, end: Int? = nil) throws(MemoryMapError) -> Int {
        try lock.withLock { () throws(MemoryMapError) -> Int in
            let base = try open()
            let (low, high) = bounds(start, end, default: 0)
            guard !sub.isEmpty else { return max(0, high - low) + 1 }
            let bytes = UnsafeRawBufferPointer(start: base, count: length)
            var found = 0
            var offset = low
            while offset + sub.count <= high {
                if bytes[offset..<offset + sub.count].elementsEqual(sub) {
                    found += 1
                    offset += sub.count
                } else {
                    offset += 1
                }
            }
            return found
        }
    }

    private func search(_ sub: [UInt8], _ start: Int?, _ end: Int?, last: Bool) throws(MemoryMapError) -> Int {
        try lock.withLock { () throws(MemoryMapError) -> Int in
            let base = try open()
            let (low, high) = bounds(start, end, default: position)
            guard high - low >= sub.count else { return -1 }
            let bytes = UnsafeRawBufferPointer(start: base, count: length)
            let candidates = low...(high - sub.count)
            let matches = { (offset: Int) in sub.isEmpty || bytes[offset..<offset + sub.count].elementsEqual(sub) }
            return (last ? candidates.reversed().first(where: matches) : candidates.first(where: matches)) ?? -1
        }
    }

    // MARK: Whole-map operations

    /// Python `m.move(dest, src, count)`: copies `count` bytes within the map (overlap allowed).
    public func move(destination: Int, source: Int, count: Int) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try writable()
            guard count >= 0, destination >= 0, source >= 0, destination <= length - count, source <= length - count else {
                throw MemoryMapError(.outOfRange, "source, destination, or count out of range")
            }
            memmove(base + destination, base + source, count)
        }
    }

    /// Python `m.flush(offset, size)`: writes changes in that range back to the file
    /// (msync). The offset must be a multiple of `allocationGranularity`.
    public func flush(offset: Int = 0, size: Int? = nil) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try open()
            let size = size ?? length - offset
            guard offset >= 0, size >= 0, offset <= length - size else {
                throw MemoryMapError(.outOfRange, "flush values out of range")
            }
            guard offset % MemoryMap.allocationGranularity == 0 else {
                throw MemoryMapError(.unalignedOffset, "flush offset must be a multiple of MemoryMap.allocationGranularity")
            }
            guard access == .write, !anonymous, size > 0 else { return }  // nothing to write back
            guard msync(base + offset, size, MS_SYNC) == 0 else { throw MemoryMapError.system("msync") }
        }
    }

    /// Python `m.resize(newsize)`: grows or shrinks the map, and the file under it with it.
    /// Read-only and copy-on-write maps cannot be resized.
    public func resize(_ newSize: Int) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try open()
            guard access == .write else {
                throw MemoryMapError(.cannotResize, access == .read ? "mmap can't resize a readonly memory map" : "mmap can't resize a copy-on-write map")
            }
            guard tracksFileDescriptor else { throw MemoryMapError(.cannotResize, "mmap can't resize with trackFileDescriptor: false") }
            guard newSize > 0 else { throw MemoryMapError(.invalidArgument, "new size out of range: a map needs at least one byte") }
            if descriptor >= 0, ftruncate(descriptor, off_t(offset + newSize)) != 0 { throw MemoryMapError.system("ftruncate") }
            let moved = colony_mremap(base, length, newSize)
            guard let moved, moved != MAP_FAILED else { throw MemoryMapError.system("mremap") }
            self.base = moved
            length = newSize
            position = min(position, newSize)
        }
    }

    /// Python `m.madvise(option, start, length)`; `start` must be a multiple of the page size.
    public func madvise(_ advice: Advice, start: Int = 0, length count: Int? = nil) throws(MemoryMapError) {
        try lock.withLock { () throws(MemoryMapError) in
            let base = try open()
            guard start >= 0, start < length else { throw MemoryMapError(.outOfRange, "madvise start \(start) is out of bounds (0..<\(length))") }
            if let count {
                guard count >= 0 else { throw MemoryMapError(.invalidArgument, "madvise length must not be negative, not \(count)") }
                guard count <= Int.max - start else { throw MemoryMapError(.overflow, "madvise start \(start) plus length \(count) does not fit an Int") }
            }
            let count = min(count ?? length, length - start)  // a length past the end stops at the end, as in Python
            guard start % MemoryMap.allocationGranularity == 0 else {
                throw MemoryMapError(.unalignedOffset, "madvise start must be a multiple of the page size")
            }
            guard Glibc.madvise(base + start, count, advice.value) == 0 else { throw MemoryMapError.system("madvise") }
        }
    }

    /// The mapping's address, for structures that live at fixed places in shared memory
    /// (the map must not be resized or closed while they are used).
    var baseAddress: UnsafeMutableRawPointer? { lock.withLock { base } }

    /// Direct access to the mapped bytes, for bulk work (the map stays locked meanwhile).
    public func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) throws -> Result {
        try lock.withLock { () throws -> Result in
            let base = try writable()
            return try body(UnsafeMutableRawBufferPointer(start: base, count: length))
        }
    }

    /// Read-only direct access to the mapped bytes.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        try lock.withLock { () throws -> Result in
            let base = try open()
            return try body(UnsafeRawBufferPointer(start: base, count: length))
        }
    }
}

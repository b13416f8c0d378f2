import Foundation
import Glibc
import MemoryMap
import Testing

/// A temporary file with `contents`, removed at deinit.
final class TemporaryFile {
    let path: String

    init(_ contents: [UInt8]) throws {
        path = NSTemporaryDirectory() + "colony-mmap-\(UUID().uuidString)"
        try Data(contents).write(to: URL(fileURLWithPath: path))
    }

    var contents: [UInt8] { (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))) ?? [] }

    deinit { unlink(path) }
}

func expectError(_ code: MemoryMapError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected \(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as MemoryMapError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct MemoryMapTests {
    let text = Array("Hello Python!\nand Swift\nend".utf8)

    @Test func readsLinesBytesAndSeeksLikePython() throws {
        let file = try TemporaryFile(text)
        let map = try MemoryMap(path: file.path)
        #expect(try map.count == text.count)
        #expect(map.description == "<mmap closed=False, access=write, length=\(text.count), pos=0, offset=0>")
        #expect(try map.size() == text.count)
        #expect(try map.readLine() == Array("Hello Python!\n".utf8))
        #expect(try map.tell() == 14)
        #expect(try map.read(3) == Array("and".utf8))
        #expect(try map.readByte() == UInt8(ascii: " "))
        try map.seek(-3, whence: .end)
        #expect(try map.read() == Array("end".utf8))
        #expect(try map.read() == [])
        #expect(try map.readLine() == [])
        expectError(.outOfRange) { _ = try map.readByte() }
        try map.seek(-4, whence: .current)
        #expect(try map.tell() == text.count - 4)
        expectError(.outOfRange) { try map.seek(1, whence: .end) }
        expectError(.outOfRange) { try map.seek(-1) }
    }

    @Test func writesReachTheFileAndStayInBounds() throws {
        let file = try TemporaryFile(Array(repeating: 0, count: 16))
        let map = try MemoryMap(path: file.path)
        #expect(try map.write(Array("abc".utf8)) == 3)
        try map.writeByte(UInt8(ascii: "d"))
        try map.set(-1, UInt8(ascii: "z"))
        #expect(try map[-1] == UInt8(ascii: "z"))
        #expect(try map[0] == UInt8(ascii: "a"))
        expectError(.outOfRange) { _ = try map[16] }
        expectError(.outOfRange) { try map.set(-17, 0) }
        try map.seek(14)
        expectError(.outOfRange) { try map.write([1, 2, 3]) }  // data out of range: nothing written
        #expect(try map.tell() == 14)
        try map.seek(0, whence: .end)
        expectError(.outOfRange) { try map.writeByte(1) }
        try map.flush()
        expectError(.unalignedOffset) { try map.flush(offset: 1, size: 1) }
        expectError(.outOfRange) { try map.flush(offset: 0, size: 17) }
        #expect(Array(file.contents.prefix(4)) == Array("abcd".utf8) && file.contents.last == UInt8(ascii: "z"))
    }

    @Test func slicesFindCountAndMove() throws {
        let map = try MemoryMap(anonymousLength: 12)
        try map.replace(0, 12, with: Array("abcabcabcxyz".utf8))
        #expect(try map.slice(0, 3) == Array("abc".utf8))
        #expect(try map.slice(-3) == Array("xyz".utf8))
        #expect(try map.slice(nil, nil, step: 3) == Array("aaax".utf8))
        #expect(try map.slice(nil, nil, step: -1) == Array("zyxcbacbacba".utf8))
        #expect(try map.slice(5, 100) == Array("cabcxyz".utf8))
        expectError(.invalidArgument) { _ = try map.slice(0, 3, step: 0) }
        expectError(.outOfRange) { try map.replace(0, 3, with: [1]) }
        #expect(try map.find(Array("abc".utf8)) == 0)
        #expect(try map.find(Array("abc".utf8), start: 1) == 3)
        #expect(try map.rfind(Array("abc".utf8)) == 6)
        #expect(try map.find(Array("q".utf8)) == -1)
        #expect(try map.find(Array("abc".utf8), start: -6, end: -3) == 6)
        try map.seek(4)
        #expect(try map.find(Array("abc".utf8)) == 6)  // find starts at the position by default
        #expect(try map.count(of: Array("abc".utf8)) == 3)
        #expect(try map.count(of: Array("abc".utf8), start: 1) == 2)
        try map.move(destination: 0, source: 9, count: 3)
        #expect(try map.slice(0, 3) == Array("xyz".utf8))
        expectError(.outOfRange) { try map.move(destination: 10, source: 0, count: 3) }
        expectError(.outOfRange) { try map.move(destination: 0, source: 0, count: -1) }
        try map.madvise(.sequential)
        try map.madvise(.willNeed, start: 0, length: 4)
        expectError(.outOfRange) { try map.madvise(.normal, start: 12) }
        // CPython's test_mmap: a length past the end stops at the end; a negative one is a
        // ValueError, one whose sum with start overflows an OverflowError.
        try map.madvise(.normal, start: 0, length: 1 << 40)
        expectError(.invalidArgument) { try map.madvise(.normal, start: 0, length: -1) }
        let pages = try MemoryMap(anonymousLength: 2 * MemoryMap.allocationGranularity)
        expectError(.overflow) { try pages.madvise(.normal, start: MemoryMap.allocationGranularity, length: Int.max) }
        try pages.madvise(.normal, start: MemoryMap.allocationGranularity, length: Int.max - MemoryMap.allocationGranularity)
    }

    @Test func resizeGrowsAndShrinksTheFileWithTheMap() throws {
        let file = try TemporaryFile(Array("0123456789".utf8))
        let map = try MemoryMap(path: file.path)
        try map.resize(20)
        #expect(try map.count == 20)
        #expect(try map.size() == 20)
        try map.seek(10)
        try map.write(Array("abcdefghij".utf8))
        try map.flush()
        #expect(file.contents == Array("0123456789abcdefghij".utf8))
        try map.resize(4)
        #expect(try map.tell() == 4)
        #expect(file.contents == Array("0123".utf8))
        expectError(.invalidArgument) { try map.resize(0) }
        let anonymous = try MemoryMap(anonymousLength: 8)
        try anonymous.resize(MemoryMap.allocationGranularity * 4)
        try anonymous.set(-1, 7)
        #expect(try anonymous[-1] == 7)
    }

    @Test func readOnlyCopyOnWriteAndClosedMapsRefuseWhatTheyCannotDo() throws {
        let file = try TemporaryFile(text)
        let readOnly = try MemoryMap(path: file.path, access: .read)
        expectError(.readOnly) { try readOnly.write([1]) }
        expectError(.readOnly) { try readOnly.writeByte(1) }
        expectError(.readOnly) { try readOnly.set(0, 1) }
        expectError(.readOnly) { try readOnly.move(destination: 0, source: 1, count: 1) }
        expectError(.cannotResize) { try readOnly.resize(100) }
        let copy = try MemoryMap(path: file.path, access: .copy)
        try copy.set(0, UInt8(ascii: "J"))
        #expect(try copy[0] == UInt8(ascii: "J"))
        #expect(file.contents == text)  // copy-on-write: the file is untouched
        expectError(.cannotResize) { try copy.resize(100) }
        copy.close()
        copy.close()
        #expect(copy.isClosed)
        expectError(.closed) { _ = try copy.read() }
        expectError(.closed) { _ = try copy[0] }
        expectError(.closed) { _ = try copy.size() }
        expectError(.closed) { try copy.seek(0) }
        expectError(.closed) { _ = try copy.count }
        #expect(copy.description == "<mmap closed=True>")  // len() of a closed map, as every other operation
    }

    /// Python's `prot` and `flags` instead of `access`, as CPython derives the access mode.
    @Test func protectionAndSharingGivenDirectly() throws {
        let file = try TemporaryFile(text)
        let descriptor = open(file.path, O_RDWR)
        #expect(descriptor >= 0)

        let readOnly = try MemoryMap(fileDescriptor: descriptor, sharing: .shared, protection: [.read])
        #expect(readOnly.access == .read && readOnly.protection == [.read])
        expectError(.readOnly) { try readOnly.set(0, 1) }

        let privateMap = try MemoryMap(fileDescriptor: descriptor, sharing: .private)
        #expect(privateMap.access == .copy)
        try privateMap.set(0, UInt8(ascii: "J"))
        #expect(try privateMap[0] == UInt8(ascii: "J"))
        #expect(file.contents == text, "private: the file is untouched")

        let shared = try MemoryMap(fileDescriptor: descriptor, sharing: .shared, protection: [.read, .write])
        try shared.set(0, UInt8(ascii: "Y"))
        #expect(file.contents.first == UInt8(ascii: "Y"))
        #expect(try readOnly[0] == UInt8(ascii: "Y"), "another shared map of the file sees it")

        // A temporary directory mounted noexec refuses executable maps (EPERM): the flag
        // reached mmap either way.
        let executable = Result { () throws(MemoryMapError) in try MemoryMap(fileDescriptor: descriptor, sharing: .private, protection: [.read, .exec]) }
        switch executable {
        case .success(let map): #expect(map.protection.contains(.exec) && map.access == .read)
        case .failure(let error): #expect(error.errno == EPERM, "\(error)")
        }
        close(descriptor)
    }

    /// Python 3.13's `trackfd=False`: the map keeps no descriptor of its own, so it outlives
    /// the caller's descriptor, and cannot tell the file's size or resize.
    @Test func aMapThatDoesNotTrackItsFileOutlivesTheDescriptorButCannotResize() throws {
        let file = try TemporaryFile(text)
        let descriptor = open(file.path, O_RDWR)
        let map = try MemoryMap(fileDescriptor: descriptor, trackFileDescriptor: false)
        close(descriptor)
        #expect(!map.tracksFileDescriptor)
        #expect(try map.slice(0, 5) == Array("Hello".utf8))
        expectError(.invalidArgument) { _ = try map.size() }
        expectError(.cannotResize) { try map.resize(100) }
    }

    /// Python's `with mmap.mmap(...) as m:`.
    @Test func usingClosesTheMapWhenTheBodyReturnsOrThrows() throws {
        let file = try TemporaryFile(text)
        let map = try MemoryMap(path: file.path)
        let first = try map.using { try $0[0] }
        #expect(first == UInt8(ascii: "H") && map.isClosed)
        let other = try MemoryMap(path: file.path)
        #expect(throws: MemoryMapError.self) { try other.using { _ in throw MemoryMapError(.invalidArgument, "the body failed") } }
        #expect(other.isClosed)
    }

    @Test func badOffsetsLengthsAndFilesAreTypedErrors() throws {
        let file = try TemporaryFile(text)
        expectError(.unalignedOffset) { _ = try MemoryMap(path: file.path, length: 4, offset: 1) }
        expectError(.fileTooShort) { _ = try MemoryMap(path: file.path, length: text.count + 1) }
        expectError(.fileTooShort) { _ = try MemoryMap(path: file.path, offset: MemoryMap.allocationGranularity) }
        expectError(.invalidArgument) { _ = try MemoryMap(path: file.path, length: -1) }
        expectError(.system) { _ = try MemoryMap(path: file.path + "-missing") }
        expectError(.system) { _ = try MemoryMap(fileDescriptor: -1) }
        expectError(.invalidArgument) { _ = try MemoryMap(anonymousLength: 0) }
        let empty = try TemporaryFile([])
        expectError(.fileTooShort) { _ = try MemoryMap(path: empty.path) }
        // A page-aligned offset maps the file from there.
        let big = try TemporaryFile((0..<(MemoryMap.allocationGranularity + 3)).map { UInt8(truncatingIfNeeded: $0) })
        let tail = try MemoryMap(path: big.path, access: .read, offset: MemoryMap.allocationGranularity)
        #expect(try tail.read() == [0, 1, 2])
        #expect(tail.offset == MemoryMap.allocationGranularity)
    }
}

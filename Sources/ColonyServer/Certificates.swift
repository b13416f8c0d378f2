import ColonyWire
import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority and the certificates it issues for managers and clients
/// (`colony certs`, and the embedded default's first run). Keys are P-256.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    let privateKey: Certificate.PrivateKey

    /// A new self-signed CA valid for `years`.
    public static func create(commonName: String = "Colony CA", years: Int = 10) throws -> CertificateAuthority {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: key)
        return CertificateAuthority(certificate: certificate, privateKey: key)
    }

    /// Loads a CA from its PEM files.
    public static func load(certificatePEM: String, privateKeyPEM: String) throws -> CertificateAuthority {
        CertificateAuthority(
            certificate: try Certificate(pemEncoded: certificatePEM), privateKey: try Certificate.PrivateKey(pemEncoded: privateKeyPEM))
    }

    /// Issues a leaf certificate: for a manager (server auth; `dnsNames` and `ipAddresses`
    /// become subject alternative names) or for a client (client auth, for mutual TLS).
    public func issue(
        commonName: String, dnsNames: [String], ipAddresses: [String], forServer: Bool, years: Int = 2
    ) throws -> (certificatePEM: String, privateKeyPEM: String) {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        var names: [GeneralName] = dnsNames.map { .dnsName($0) }
        for address in ipAddresses {
            guard let bytes = CertificateAuthority.ipAddressBytes(address) else {
                throw CertificateError("'\(address)' is not an IPv4 or IPv6 address")
            }
            names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86400),
            issuer: self.certificate.subject, subject: try DistinguishedName { CommonName(commonName) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([forServer ? .serverAuth : .clientAuth])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: privateKey)
        return (try certificate.serializeAsPEM().pemString, try key.serializeAsPEM().pemString)
    }

    public func certificatePEM() throws -> String { try certificate.serializeAsPEM().pemString }
    public func privateKeyPEM() throws -> String { try privateKey.serializeAsPEM().pemString }

    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// A certificate could not be made or read.
public struct CertificateError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The embedded default's files: created on first use, reused afterwards (SPEC.md 1; README
/// "Start a manager").
///
///     <dir>/ca.pem            the CA clients trust
///     <dir>/ca-key.pem        the CA's key (0600), for `colony certs`
///     <dir>/manager.pem       the manager's certificate (localhost, 127.0.0.1, ::1)
///     <dir>/manager-key.pem   its key (0600)
///     <dir>/authkey           the authkey, 64 hex digits (0600)
///     <dir>/object-ids        the next object id a manager may use (decimal): ids never
///                             repeat across restarts
public struct StateDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// `$COLONY_STATE_DIR`, else `$XDG_STATE_HOME/colony`, else `~/.local/state/colony`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["COLONY_STATE_DIR"], !explicit.isEmpty { return explicit }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/colony" }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return home + "/.local/state/colony"
    }

    public var caCertificatePath: String { path + "/ca.pem" }
    public var caKeyPath: String { path + "/ca-key.pem" }
    public var managerCertificatePath: String { path + "/manager.pem" }
    public var managerKeyPath: String { path + "/manager-key.pem" }
    public var authKeyPath: String { path + "/authkey" }
    public var objectIDsPath: String { path + "/object-ids" }

    /// Creates whatever is missing; returns what it created, for the user's information.
    @discardableResult
    public func prepare() throws -> [String] {
        let files = FileManager.default
        try files.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var created: [String] = []
        let authority: CertificateAuthority
        if files.fileExists(atPath: caCertificatePath) && files.fileExists(atPath: caKeyPath) {
            authority = try CertificateAuthority.load(
                certificatePEM: String(contentsOfFile: caCertificatePath, encoding: .utf8),
                privateKeyPEM: String(contentsOfFile: caKeyPath, encoding: .utf8))
        } else {
            authority = try CertificateAuthority.create()
            try StateDirectory.write(authority.certificatePEM(), to: caCertificatePath, mode: 0o644)
            try StateDirectory.write(authority.privateKeyPEM(), to: caKeyPath, mode: 0o600)
            created.append(caCertificatePath)
        }
        if !files.fileExists(atPath: managerCertificatePath) || !files.fileExists(atPath: managerKeyPath) {
            let leaf = try authority.issue(
                commonName: "colony manager", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"], forServer: true)
            try StateDirectory.write(leaf.certificatePEM, to: managerCertificatePath, mode: 0o644)
            try StateDirectory.write(leaf.privateKeyPEM, to: managerKeyPath, mode: 0o600)
            created.append(managerCertificatePath)
        }
        if !files.fileExists(atPath: authKeyPath) {
            try StateDirectory.write(AuthKey.hex(AuthKey.random().bytes) + "\n", to: authKeyPath, mode: 0o600)
            created.append(authKeyPath)
        }
        return created
    }

    /// Writes a file with the given permissions (0600 for keys), replacing it.
    public static func write(_ text: String, to path: String, mode: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode_t(mode))
        guard fd >= 0 else { throw CertificateError("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        fchmod(fd, mode_t(mode))
        var bytes = Array(text.utf8)
        guard Foundation.write(fd, &bytes, bytes.count) == bytes.count else {
            throw CertificateError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}


package flowbridge

// Frames and messages of the stdio protocol, version 1 (SPEC sections 1 and 3).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

const (
	// ProtocolVersion is the version of the stdio protocol this adapter speaks.
	ProtocolVersion = 1
	// DefaultMaxFrame is the frame limit used until hello announces another.
	DefaultMaxFrame = 16 * 1024 * 1024
	minMaxFrame     = 1024
	maxMaxFrame     = 1024 * 1024 * 1024
	maxID           = 1<<53 - 1
	maxConcurrency  = 65536
)

// ProtocolError reports input that breaks the stdio protocol, or a message that the
// protocol's state table does not allow. Kind is one of the Kind* constants
// (schema_gen.go), the names of SPEC section 4 and of the shared vectors.
type ProtocolError struct {
	Kind ErrorKind
	Msg  string
}

func (e *ProtocolError) Error() string {
	return "flow-bridge protocol error (" + string(e.Kind) + "): " + e.Msg
}

func protoErr(kind ErrorKind, format string, args ...any) *ProtocolError {
	return &ProtocolError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// message is any protocol message, decoded. Only the fields of its type are set;
// absent optional fields hold their defaults.
type message struct {
	typ  string
	spec *msgSpec // the type's row of the schema
	// hello
	protocols  []uint64
	plugin     string
	pluginType string // hello and ready; "" in ready means not declared
	maxFrame   uint64
	bridge     string
	// ready
	protocol    uint64
	concurrency uint64
	debug       bool
	name        string
	version     string
	// task, debug, cancel, result, error, log
	id    uint64
	hasID bool
	// task, debug
	config     []byte
	projectID  string
	flowID     string
	job        string
	elementID  string
	elementJob string
	timeoutMS  uint64
	// result, error. data is any value; hasData tells nil from absent.
	data    any
	hasData bool
	message string
	detail  string
	// log
	level string
	msg   string
	time  string
	// cancel
	reason string
	// state
	connected bool
}

// decodeMessage decodes and validates one frame body. The message's strings and
// config share body's memory, so body must not change afterwards.
func decodeMessage(body []byte, m *message) error {
	if len(body) == 0 {
		return protoErr(KindBadMsgpack, "empty frame: a frame must hold one msgpack map")
	}
	d := decoder{b: body}
	if err := d.skip(0); err != nil {
		return protoErr(KindBadMsgpack, "frame is not valid msgpack: %v", err)
	}
	if d.off != len(body) {
		return protoErr(KindBadMsgpack, "frame holds %d bytes after its msgpack value", len(body)-d.off)
	}
	d.off = 0
	_, k, n, _ := d.header()
	if k != kindMap {
		return protoErr(KindNotAMap, "a frame must hold a msgpack map, got a msgpack %s", kindName(k))
	}
	// Where each known field's value starts (+1; 0 means absent). A repeated key
	// counts once, with its last value.
	var pos [numFields]int32
	for j := 0; j < n; j++ {
		c, _ := d.peek()
		f := -1
		if kindOf(c) == kindStr {
			key, _ := d.str()
			f = fieldOf(key)
		} else {
			_ = d.skip(0)
		}
		if f >= 0 {
			pos[f] = int32(d.off) + 1
		}
		_ = d.skip(0)
	}
	if pos[fType] == 0 {
		return protoErr(KindMissingType, "the frame's map has no 'type' field")
	}
	d.off = int(pos[fType] - 1)
	typ, err := d.str()
	if err != nil {
		return protoErr(KindMissingType, "the frame's 'type' field is not a string")
	}
	spec := specOf(typ)
	if spec == nil {
		return protoErr(KindUnknownType, "unknown message type %q", typ)
	}
	var missing []string
	for _, f := range spec.required {
		if pos[f] == 0 {
			missing = append(missing, fieldNames[f])
		}
	}
	if missing != nil {
		return protoErr(KindBadField, "%s message lacks required field(s) %s", typ, strings.Join(missing, ", "))
	}
	*m = message{typ: typ, spec: spec, maxFrame: DefaultMaxFrame, concurrency: 1, reason: "timeout"}
	if typ == "hello" {
		m.pluginType = string(PluginService) // in ready, absent means not declared
	}
	for _, f := range spec.fields {
		if pos[f] == 0 {
			continue
		}
		d.off = int(pos[f] - 1)
		if err := decodeField(&d, f, m); err != nil {
			return protoErr(KindBadField, "invalid %s message: field %s %v", typ, fieldNames[f], err)
		}
	}
	return nil
}

func kindName(k mpKind) string {
	return [...]string{"invalid", "nil", "bool", "int", "float", "str", "bin", "array", "map", "ext"}[k]
}

// fieldError is a bad_field reason; decodeMessage adds the field's name in front.
type fieldError string

func (e fieldError) Error() string { return string(e) }

func decodeField(d *decoder, f int, m *message) error {
	var err error
	str := func(p *string) {
		if *p, err = d.str(); err != nil {
			err = fieldError("must be a string")
		}
	}
	switch f {
	case fProtocols:
		_, k, n, _ := d.header()
		if k != kindArray || n == 0 {
			return fieldError("must be a non-empty array of positive integers")
		}
		m.protocols = make([]uint64, n)
		for j := range m.protocols {
			if m.protocols[j], err = d.uintIn(1, math.MaxUint64); err != nil {
				return fieldError("must be a non-empty array of positive integers")
			}
		}
	case fPlugin:
		str(&m.plugin)
	case fPluginType:
		str(&m.pluginType)
		if err == nil && !PluginType(m.pluginType).valid() {
			return fieldError("must be service or user, got " + fmt.Sprintf("%q", m.pluginType))
		}
	case fMaxFrame:
		if m.maxFrame, err = d.uintIn(minMaxFrame, maxMaxFrame); err != nil {
			return fieldError(fmt.Sprintf("must be an integer in %d..%d", minMaxFrame, maxMaxFrame))
		}
	case fBridge:
		str(&m.bridge)
	case fProtocol:
		if m.protocol, err = d.uintIn(1, math.MaxUint64); err != nil {
			return fieldError("must be a positive integer")
		}
	case fConcurrency:
		if m.concurrency, err = d.uintIn(1, maxConcurrency); err != nil {
			return fieldError("must be an integer in 1..65536")
		}
	case fDebug:
		if m.debug, err = d.boolean(); err != nil {
			return fieldError("must be a boolean")
		}
	case fName:
		str(&m.name)
	case fVersion:
		str(&m.version)
	case fID:
		if m.typ == "log" {
			if c, _ := d.peek(); c == 0xc0 { // a nil log id means none
				return nil
			}
		}
		if m.id, err = d.uintIn(0, maxID); err != nil {
			return fieldError("must be an integer in 0..2**53-1")
		}
		m.hasID = true
	case fConfig:
		if m.config, err = d.bin(); err != nil {
			return fieldError("must be bytes (msgpack bin)")
		}
	case fProjectID:
		str(&m.projectID)
	case fFlowID:
		str(&m.flowID)
	case fJob:
		str(&m.job)
	case fElementID:
		str(&m.elementID)
	case fElementJob:
		str(&m.elementJob)
	case fTimeoutMS:
		if m.timeoutMS, err = d.uintIn(0, math.MaxUint64); err != nil {
			return fieldError("must be a non-negative integer")
		}
	case fData:
		// Any value: nil in a result is JSON null, in an error the same as absent.
		if m.data, err = d.value(0); err != nil {
			return err
		}
		m.hasData = true
	case fMessage:
		str(&m.message)
	case fDetail:
		str(&m.detail)
	case fLevel:
		str(&m.level)
		if err == nil {
			switch m.level {
			case "debug", "info", "warning", "error":
			default:
				return fieldError(fmt.Sprintf("must be debug, info, warning or error, got %q", m.level))
			}
		}
	case fMsg:
		str(&m.msg)
	case fTime:
		str(&m.time)
	case fReason:
		str(&m.reason)
	case fConnected:
		if m.connected, err = d.boolean(); err != nil {
			return fieldError("must be a boolean")
		}
	}
	return err
}

// readFrame reads one frame body. It returns io.EOF at a clean end of input (between
// frames) and a *ProtocolError when the input breaks framing. The body is freshly
// allocated, so the caller may keep pointers into it.
func readFrame(r *bufio.Reader, maxFrame uint64) ([]byte, error) {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, protoErr(KindTruncated, "input ended inside a frame header (%d of 4 bytes)", n)
		}
		return nil, err
	}
	length := uint64(binary.BigEndian.Uint32(hdr[:]))
	if length > maxFrame {
		return nil, protoErr(KindFrameTooLarge, "frame of %d bytes exceeds the limit of %d (first bytes: %q)", length, maxFrame, hdr[:])
	}
	body := make([]byte, length)
	if n, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, protoErr(KindTruncated, "input ended inside a frame (%d of %d body bytes read)", n, length)
		}
		return nil, err
	}
	return body, nil
}

// ---------------------------------------------------------------------------
// Frames the child writes, in canonical form (SPEC section 1, "Encoding").

// beginFrame reserves the length header; endFrame fills it in.
func beginFrame(b []byte) ([]byte, int) {
	b = append(b, 0, 0, 0, 0)
	return b, len(b)
}

func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start-4:start], uint32(len(b)-start))
	return b
}

// appendReady writes a ready frame; pluginType "" (not declared) is left out.
func appendReady(b []byte, protocol, concurrency uint64, debug bool, name, version string, pluginType PluginType) []byte {
	b, start := beginFrame(b)
	if pluginType == "" {
		b = append(b, 0x86)
	} else {
		b = append(b, 0x87)
	}
	b = append(b, 0xa4, 't', 'y', 'p', 'e', 0xa5, 'r', 'e', 'a', 'd', 'y')
	b = appendStr(b, "protocol")
	b = appendUint(b, protocol)
	b = appendStr(b, "concurrency")
	b = appendUint(b, concurrency)
	b = appendStr(b, "debug")
	b = appendBool(b, debug)
	b = appendStr(b, "name")
	b = appendText(b, name)
	b = appendStr(b, "version")
	b = appendText(b, version)
	if pluginType != "" {
		b = appendStr(b, "plugin_type")
		b = appendStr(b, string(pluginType))
	}
	return endFrame(b, start)
}

// appendResultHead writes a result frame up to the data value; the caller appends
// data and then calls appendResultTail.
func appendResultHead(b []byte, id uint64) ([]byte, int) {
	b, start := beginFrame(b)
	b = append(b, 0x85, 0xa4, 't', 'y', 'p', 'e', 0xa6, 'r', 'e', 's', 'u', 'l', 't', 0xa2, 'i', 'd')
	b = appendUint(b, id)
	b = append(b, 0xa4, 'd', 'a', 't', 'a')
	return b, start
}

func appendResultTail(b []byte, start int, message, detail string) []byte {
	b = append(b, 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e')
	b = appendText(b, message)
	b = append(b, 0xa6, 'd', 'e', 't', 'a', 'i', 'l')
	b = appendText(b, detail)
	return endFrame(b, start)
}

func appendError(b []byte, id uint64, message, detail string) []byte {
	b, start := appendErrorHead(b, id, message, detail, false)
	return endFrame(b, start)
}

// appendErrorData writes an error frame carrying data (nil is written as nil). When
// the data cannot be encoded it returns the error, and b is unusable.
func appendErrorData(b []byte, id uint64, message, detail string, data any) ([]byte, error) {
	b, start := appendErrorHead(b, id, message, detail, true)
	b = append(b, 0xa4, 'd', 'a', 't', 'a')
	var enc encoder
	b, err := enc.appendValue(b, data, 0)
	if err != nil {
		return b, err
	}
	return endFrame(b, start), nil
}

func appendErrorHead(b []byte, id uint64, message, detail string, withData bool) ([]byte, int) {
	b, start := beginFrame(b)
	if withData {
		b = append(b, 0x85)
	} else {
		b = append(b, 0x84)
	}
	b = append(b, 0xa4, 't', 'y', 'p', 'e', 0xa5, 'e', 'r', 'r', 'o', 'r', 0xa2, 'i', 'd')
	b = appendUint(b, id)
	b = append(b, 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e')
	b = appendText(b, message)
	b = append(b, 0xa6, 'd', 'e', 't', 'a', 'i', 'l')
	b = appendText(b, detail)
	return b, start
}

// tooLargeMessage is the error message for a result frame of size bytes over the limit,
// in the words every adapter uses (SPEC section 4).
func tooLargeMessage(size, maxFrame uint64) string {
	return fmt.Sprintf("result too large: %d bytes, the limit is %d (hello.max_frame); return less data", size, maxFrame)
}

// appendLog writes a log frame; the id is left out when hasID is false.
func appendLog(b []byte, level, msg string, id uint64, hasID bool, time string) []byte {
	b, start := beginFrame(b)
	if hasID {
		b = append(b, 0x85)
	} else {
		b = append(b, 0x84)
	}
	b = append(b, 0xa4, 't', 'y', 'p', 'e', 0xa3, 'l', 'o', 'g', 0xa5, 'l', 'e', 'v', 'e', 'l')
	b = appendStr(b, level)
	b = append(b, 0xa3, 'm', 's', 'g')
	b = appendText(b, msg)
	if hasID {
		b = append(b, 0xa2, 'i', 'd')
		b = appendUint(b, id)
	}
	b = append(b, 0xa4, 't', 'i', 'm', 'e')
	b = appendStr(b, time)
	return endFrame(b, start)
}

package retention

import (
	"crypto/sha256"
	"fmt"
)

// hmacParams are the arguments that let PostgreSQL compute a subject's HMAC
// with its built-in sha256 (no extension needed): the HMAC key XORed with
// the inner and outer pads, and the message prefix (for a subject, its
// table and "/"; for a minimised value, nothing).
// Sweeps use it to find subjects by HMAC without reading every key out.
type hmacParams struct {
	ipad, opad []byte
	prefix     string
}

func newHMACParams(secret, prefix string) hmacParams {
	key := []byte(secret)
	if len(key) > sha256.BlockSize {
		sum := sha256.Sum256(key)
		key = sum[:]
	}
	block := make([]byte, sha256.BlockSize)
	copy(block, key)
	p := hmacParams{ipad: make([]byte, sha256.BlockSize), opad: make([]byte, sha256.BlockSize), prefix: prefix}
	for i, b := range block {
		p.ipad[i] = b ^ 0x36
		p.opad[i] = b ^ 0x5c
	}
	return p
}

// hmacSQL is the SQL expression of the HMAC of keyExpr (a text expression),
// with the pads and prefix as parameters $n, $n+1 and $n+2.
func hmacSQL(keyExpr string, n int) string {
	return fmt.Sprintf("encode(sha256($%d::bytea || sha256($%d::bytea || convert_to($%d::text || %s, 'UTF8'))), 'hex')", n+1, n, n+2, keyExpr)
}

// args returns the parameters hmacSQL refers to, in order.
func (p hmacParams) args() []any { return []any{p.ipad, p.opad, p.prefix} }

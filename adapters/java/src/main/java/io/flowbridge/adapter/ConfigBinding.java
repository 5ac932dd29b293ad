package io.flowbridge.adapter;

import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Binds a parsed JSON tree to a record, component by component, so that a handler can
 * declare its config as {@code record Config(double x, String unit, List<Integer> ids)}.
 *
 * <p>A component takes the object's member of the same name. Missing or null members
 * leave reference components null (Optional components empty) and are an error for
 * primitives. Numbers convert to any numeric type that holds them exactly; nested
 * records, enums (by name), {@code List<T>}, {@code Map<String, T>}, {@code Object}
 * (the raw tree) and {@code byte[]} (from a string, as UTF-8) work as one expects. A
 * mismatch is a {@link HandlerException} naming the JSON path of the value.
 */
final class ConfigBinding {
    private ConfigBinding() {}

    static <T> T bind(Object tree, Class<T> type) throws HandlerException {
        try {
            return type.cast(convert(tree, type, "$"));
        } catch (BindingException e) {
            throw new HandlerException("invalid config: " + e.getMessage());
        }
    }

    private static final class BindingException extends Exception {
        private static final long serialVersionUID = 1L;

        BindingException(String message) {
            super(message);
        }
    }

    private static Object convert(Object v, Type type, String path) throws BindingException {
        Class<?> raw = rawClass(type);
        if (raw == Optional.class) {
            Type inner = typeArgument(type, 0);
            return v == null ? Optional.empty() : Optional.of(convert(v, inner, path));
        }
        if (v == null) {
            if (raw.isPrimitive()) {
                throw new BindingException(path + " is missing or null; expected " + describe(raw));
            }
            return null;
        }
        if (raw == Object.class) {
            return v;
        }
        if (raw == String.class) {
            if (v instanceof String) {
                return v;
            }
            throw mismatch(path, "a string", v);
        }
        if (raw == boolean.class || raw == Boolean.class) {
            if (v instanceof Boolean) {
                return v;
            }
            throw mismatch(path, "true or false", v);
        }
        if (isNumeric(raw)) {
            if (!(v instanceof Number n)) {
                throw mismatch(path, "a number", v);
            }
            return number(n, raw, path);
        }
        if (raw.isEnum()) {
            if (v instanceof String s) {
                for (Object c : raw.getEnumConstants()) {
                    if (((Enum<?>) c).name().equals(s)) {
                        return c;
                    }
                }
                throw new BindingException(path + " is \"" + s + "\"; expected one of "
                        + List.of(raw.getEnumConstants()));
            }
            throw mismatch(path, "a string", v);
        }
        if (raw == byte[].class) {
            if (v instanceof String s) {
                return s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
            }
            throw mismatch(path, "a string", v);
        }
        if (List.class.isAssignableFrom(raw) || raw == Iterable.class || raw == java.util.Collection.class) {
            if (!(v instanceof List<?> list)) {
                throw mismatch(path, "an array", v);
            }
            Type inner = typeArgument(type, 0);
            List<Object> out = new ArrayList<>(list.size());
            for (int i = 0; i < list.size(); i++) {
                out.add(convert(list.get(i), inner, path + "[" + i + "]"));
            }
            return out;
        }
        if (Map.class.isAssignableFrom(raw)) {
            if (!(v instanceof Map<?, ?> map)) {
                throw mismatch(path, "an object", v);
            }
            Type inner = typeArgument(type, 1);
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : map.entrySet()) {
                String key = String.valueOf(e.getKey());
                out.put(key, convert(e.getValue(), inner, path + "." + key));
            }
            return out;
        }
        if (raw.isRecord()) {
            if (!(v instanceof Map<?, ?> map)) {
                throw mismatch(path, "an object", v);
            }
            return record(map, raw, path);
        }
        throw new BindingException(path + ": cannot bind to " + raw.getName()
                + "; use String, numbers, boolean, enums, List, Map, Optional, Object or records");
    }

    private static Object record(Map<?, ?> map, Class<?> raw, String path) throws BindingException {
        RecordComponent[] comps = raw.getRecordComponents();
        Object[] args = new Object[comps.length];
        Class<?>[] types = new Class<?>[comps.length];
        for (int i = 0; i < comps.length; i++) {
            RecordComponent c = comps[i];
            types[i] = c.getType();
            args[i] = convert(map.get(c.getName()), c.getGenericType(), path + "." + c.getName());
        }
        try {
            Constructor<?> ctor = raw.getDeclaredConstructor(types);
            ctor.setAccessible(true); // config records are often private, nested in the handler's class
            return ctor.newInstance(args);
        } catch (InvocationTargetException e) {
            // The record's own validation refused the value: its message is the reason.
            Throwable cause = e.getCause();
            throw new BindingException(path + ": " + (cause.getMessage() != null ? cause.getMessage() : cause));
        } catch (ReflectiveOperationException | RuntimeException e) {
            throw new BindingException(path + ": cannot build " + raw.getName() + ": " + e);
        }
    }

    private static boolean isNumeric(Class<?> c) {
        return c == int.class || c == Integer.class || c == long.class || c == Long.class
                || c == double.class || c == Double.class || c == float.class || c == Float.class
                || c == short.class || c == Short.class || c == byte.class || c == Byte.class
                || c == BigInteger.class || c == BigDecimal.class || c == Number.class;
    }

    private static Object number(Number n, Class<?> to, String path) throws BindingException {
        if (to == Number.class) {
            return n;
        }
        if (to == double.class || to == Double.class) {
            return n.doubleValue();
        }
        if (to == float.class || to == Float.class) {
            return n.floatValue();
        }
        BigDecimal d = n instanceof BigInteger b ? new BigDecimal(b)
                : n instanceof Double || n instanceof Float ? BigDecimal.valueOf(n.doubleValue())
                : new BigDecimal(n.toString());
        if (to == BigDecimal.class) {
            return d;
        }
        BigInteger whole;
        try {
            whole = d.toBigIntegerExact();
        } catch (ArithmeticException e) {
            throw new BindingException(path + " is " + n + "; expected a whole number");
        }
        if (to == BigInteger.class) {
            return whole;
        }
        try {
            if (to == long.class || to == Long.class) {
                return whole.longValueExact();
            }
            if (to == int.class || to == Integer.class) {
                return whole.intValueExact();
            }
            if (to == short.class || to == Short.class) {
                return whole.shortValueExact();
            }
            return whole.byteValueExact();
        } catch (ArithmeticException e) {
            throw new BindingException(path + " is " + n + ", out of range for " + to.getSimpleName());
        }
    }

    private static BindingException mismatch(String path, String expected, Object got) {
        return new BindingException(path + " must be " + expected + ", got " + kind(got));
    }

    private static String kind(Object v) {
        if (v instanceof String) {
            return "a string";
        }
        if (v instanceof Number) {
            return "a number";
        }
        if (v instanceof Boolean) {
            return "a boolean";
        }
        if (v instanceof List) {
            return "an array";
        }
        if (v instanceof Map) {
            return "an object";
        }
        return v.getClass().getSimpleName();
    }

    private static String describe(Class<?> primitive) {
        return primitive == boolean.class ? "true or false" : "a number";
    }

    private static Class<?> rawClass(Type t) {
        if (t instanceof Class<?> c) {
            return c;
        }
        if (t instanceof ParameterizedType p) {
            return (Class<?>) p.getRawType();
        }
        if (t instanceof WildcardType w) {
            return rawClass(w.getUpperBounds()[0]);
        }
        return Object.class;
    }

    private static Type typeArgument(Type t, int i) {
        if (t instanceof ParameterizedType p && p.getActualTypeArguments().length > i) {
            return p.getActualTypeArguments()[i];
        }
        return Object.class;
    }

    /** A record's components by name, in declaration order (for writing it as JSON). */
    static Map<String, Object> recordToMap(Object rec) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (RecordComponent c : rec.getClass().getRecordComponents()) {
            try {
                Method a = c.getAccessor();
                a.setAccessible(true);
                m.put(c.getName(), a.invoke(rec));
            } catch (ReflectiveOperationException e) {
                throw new IllegalArgumentException("cannot read " + c.getName() + " of " + rec.getClass().getName(), e);
            }
        }
        return m;
    }
}

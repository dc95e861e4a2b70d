/*
 * codecs.c (binding) - what the build decodes, and encode_webp().
 *
 *   _core.codec_formats() -> {format: bool}   decodable now (HEIC/AVIF: the
 *                                              libheif plugin is present)
 *   _core.codec_libraries() -> {name: version} libwebp, giflib, libheif
 *   _core.encode_webp(arr, quality, lossless, method, bgr) -> bytes
 *
 * Registered by an_codecs_exec() so this file is the only place that knows
 * the new formats' entry points.
 */
#include "../an_py.h"

static PyObject *
codec_formats(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    static const an_format formats[] = {AN_FMT_JPEG, AN_FMT_PNG,  AN_FMT_WEBP,
                                        AN_FMT_GIF,  AN_FMT_HEIC, AN_FMT_AVIF};
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = an_format_available(formats[i]); /* may load libheif's plugins once */
        Py_END_ALLOW_THREADS
        if (PyDict_SetItemString(d, an_format_name(formats[i]), ok ? Py_True : Py_False) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *
codec_libraries(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    const char *names[] = {"libwebp", "giflib", "libheif"};
    const char *versions[] = {an_libwebp_version(), an_giflib_version(), an_libheif_version()};
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < 3; i++) {
        if (versions[i] == NULL)
            continue;
        PyObject *v = PyUnicode_FromString(versions[i]);
        if (v == NULL || PyDict_SetItemString(d, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyMethodDef codec_methods[] = {
    {"codec_formats", codec_formats, METH_NOARGS,
     "codec_formats() -> {format: bool}: the formats this build decodes now."},
    {"codec_libraries", codec_libraries, METH_NOARGS,
     "codec_libraries() -> {name: version}: the codec libraries loaded."},
    {"encode_webp", (PyCFunction)(void (*)(void))an_py_encode_webp, METH_FASTCALL,
     "encode_webp(arr, quality, lossless, method, bgr) -> bytes"},
    {NULL, NULL, 0, NULL},
};

int
an_codecs_exec(PyObject *module, an_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, codec_methods);
}
